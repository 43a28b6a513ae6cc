"""Spreadsheets (.xlsx through openpyxl, .xls through xlrd, .ods through odfpy) and delimited text (.csv,
.tsv): each sheet's rows in blocks that repeat the header row, cited as "sheet NAME, rows A-B"."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from ingest.limits import Limits, setting
from ingest.loaders.document import LoadedDocument, TextBuilder, parsing
from ingest.loaders.opendocument import cell_texts
from ingest.loaders.tables import MAX_COLUMNS, clean_rows, row_blocks, rows_label
from ingest.loaders.text import decode_text
from ingest.records import SkipFile

Rows = Iterable[tuple[int, Sequence[object]]]  # (row number as the sheet shows it, cell values)

# A row repeated more than this many times (ODF's run-length "number-rows-repeated") is kept this many times.
MAX_REPEAT = 1000


def _sheets_document(sheets: Iterable[tuple[str | None, Rows]], limits: Limits) -> LoadedDocument:
    builder = TextBuilder()
    read = 0

    def counted(rows: Rows) -> Rows:
        nonlocal read
        for row in rows:
            read += 1
            if read > limits.rows:
                raise SkipFile("too-many-rows", f"more than {limits.rows:,} rows ({setting('rows')} raises it)")
            yield row

    for name, rows in sheets:
        for block in row_blocks(clean_rows(counted(rows))):
            where = rows_label(block)
            builder.block(block.text, heading=f"sheet {name}, {where}" if name else where)
    return builder.document("spreadsheet")


def load_xlsx(data: bytes, limits: Limits) -> LoadedDocument:
    import openpyxl

    with parsing("spreadsheet-broken"):
        # data_only: the values a formula last computed, as Excel shows them, not the formula text.
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        return _sheets_document(
            ((sheet.title, enumerate(sheet.iter_rows(values_only=True), start=1)) for sheet in book.worksheets),
            limits,
        )
    finally:
        book.close()


def load_xls(data: bytes, limits: Limits) -> LoadedDocument:
    import xlrd

    with parsing("spreadsheet-broken"):
        book = xlrd.open_workbook(file_contents=data, on_demand=True)

    def rows(sheet: xlrd.sheet.Sheet) -> Rows:
        for r in range(sheet.nrows):
            yield r + 1, sheet.row_values(r, 0, min(sheet.ncols, MAX_COLUMNS))

    try:
        return _sheets_document(((sheet.name, rows(sheet)) for sheet in book.sheets()), limits)
    finally:
        book.release_resources()


def load_ods(data: bytes, limits: Limits) -> LoadedDocument:
    from odf import opendocument, table

    with parsing("spreadsheet-broken"):
        doc = opendocument.load(io.BytesIO(data))

    def rows(sheet) -> Rows:  # sheet: an odf table:table element
        number = 0
        for row in sheet.getElementsByType(table.TableRow):
            repeat = int(row.getAttribute("numberrowsrepeated") or 1)
            if any(cells := cell_texts(row)):
                for k in range(min(repeat, MAX_REPEAT)):
                    yield number + k + 1, cells
            number += repeat

    sheets = ((s.getAttribute("name"), rows(s)) for s in doc.spreadsheet.getElementsByType(table.Table))
    return _sheets_document(sheets, limits)


def load_csv(data: bytes, limits: Limits) -> LoadedDocument:
    return load_delimited(data, None, limits)


def load_tsv(data: bytes, limits: Limits) -> LoadedDocument:
    return load_delimited(data, "\t", limits)


def load_delimited(data: bytes, delimiter: str | None, limits: Limits | None = None) -> LoadedDocument:
    """CSV or TSV text; ``delimiter`` None sniffs it from the first lines."""
    text, encoding = decode_text(data)
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    try:
        # csv's own limit (128 KiB a field) guards against a file with a stray quote swallowing everything.
        rows = enumerate(csv.reader(io.StringIO(text), delimiter=delimiter), start=1)
        doc = _sheets_document([(None, rows)], limits or Limits())
    except csv.Error as e:
        raise SkipFile("csv-broken", str(e)[:200]) from None
    doc.encoding = encoding
    return doc
