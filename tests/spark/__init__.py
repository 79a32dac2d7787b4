"""The Spark engine's tests (marks: spark, slow): a JVM per module, files under /tmp."""

# A few thousand rows: each query's fixed costs dominate (planning, one task per shuffle
# partition, code generation); set on a test's session after it starts.
SMALL_DATA_CONF = {
    "spark.sql.shuffle.partitions": "1",
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.codegen.wholeStage": "false",
}
