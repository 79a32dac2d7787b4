"""What every Spark module of the warehouse interface shares: reading a query into pandas
through Arrow, a pandas frame into a Spark DataFrame, SQL literals, and writing rows into
an existing table by column name."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def read(session: SparkSession, query: str) -> pd.DataFrame:
    """The rows of ``query`` as pandas, through Arrow: dates as ``datetime.date`` objects,
    decimals as ``Decimal``, timestamps in UTC (the session's zone)."""
    return session.sql(query).toArrow().to_pandas()


def period_first(frame: pd.DataFrame) -> pd.DataFrame:
    """A per-period mart's rows with ``as_of`` first, where the marts' models put it: Spark
    stores a partition column last, and both engines hand over the same frame."""
    if "as_of" not in frame.columns:
        return frame
    return frame[["as_of", *(column for column in frame.columns if column != "as_of")]]


def scalar(session: SparkSession, query: str) -> Any:
    """The first column of the first row of ``query`` (None: no row)."""
    row = session.sql(query).first()
    return None if row is None else row[0]


def exists(session: SparkSession, table: str) -> bool:
    """Whether the catalog has ``table`` (``schema.name``); a missing schema is no table."""
    return bool(session.catalog.tableExists(table))


def to_spark(session: SparkSession, frame: pd.DataFrame) -> DataFrame:
    """``frame`` as a Spark DataFrame through Arrow: timestamps at microseconds in UTC (a
    naive timestamp is read as UTC, as the raw contract loads it), and a column with no
    value at all as text (Parquet has no type for "nothing")."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    fields = []
    for field in table.schema:
        if pa.types.is_timestamp(field.type):
            field = pa.field(field.name, pa.timestamp("us", tz="UTC"))
        elif pa.types.is_null(field.type):
            field = pa.field(field.name, pa.string())
        fields.append(field)
    return session.createDataFrame(table.cast(pa.schema(fields), safe=False))


def insert(session: SparkSession, table: str, rows: DataFrame, *, overwrite: bool) -> None:
    """Write ``rows`` into the existing ``table``, matching columns by name and casting
    each to the table's type (``insertInto`` itself matches by position)."""
    from pyspark.sql import functions

    fields = session.table(table).schema.fields
    aligned = rows.select(
        *(functions.col(field.name).cast(field.dataType).alias(field.name) for field in fields)
    )
    aligned.write.insertInto(table, overwrite=overwrite)


def parse_dates(values: Sequence[date | str]) -> list[date]:
    """``values`` (dates, or ISO dates as text) as dates: nothing but a date reaches SQL."""
    return [v if isinstance(v, date) else date.fromisoformat(str(v)) for v in values]


def dates_sql(values: Sequence[date | str]) -> str:
    """``values`` as a list of SQL date literals (see :func:`parse_dates`)."""
    return ", ".join(f"date'{day.isoformat()}'" for day in parse_dates(values))


def identifier(*parts: str) -> str:
    """A quoted (backticked) name: any name dbt gives a relation."""
    return ".".join("`" + part.replace("`", "``") + "`" for part in parts)
