"""Real files of every supported format, written by the libraries that write them, each holding one known fact.

Each :class:`Sample` names the file, a question whose answer is in it, the answer's words, and where a citation
must point (a substring of the hit's location: page, slide, sheet rows, chapter, heading).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    name: str
    write: Callable[[Path], None]
    question: str
    answer: str
    location: str  # a part of StoredChunk.location() of the chunk that holds the answer
    ocr: bool = False


def _docx_bytes(heading: str, paragraph: str, table: list[list[str]] | None = None) -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Field notes", level=1)
    document.add_paragraph("Introductory remarks about the coastal survey.")
    document.add_heading(heading, level=2)
    document.add_paragraph(paragraph)
    if table:
        t = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                t.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def write_docx(path: Path) -> None:
    path.write_bytes(
        _docx_bytes(
            "Lighthouse maintenance",
            "The Varnholm lighthouse lamp is replaced every fourteen months.",
            [["Keeper", "Years of service"], ["Ingrid Solberg", "1921 to 1950"], ["Tomas Aune", "1950 to 1977"]],
        )
    )


def write_pptx(path: Path) -> None:
    import pptx

    deck = pptx.Presentation()
    layout = deck.slide_layouts[1]  # title and content
    for title, body in (
        ("Overview", "Agenda for the growers' meeting."),
        ("Harvest forecast", "The Quillan orchard expects 3,400 crates of apples this autumn."),
    ):
        slide = deck.slides.add_slide(layout)
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    deck.save(path)


def write_xlsx(path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    book.active.title = "Notes"
    book.active.append(["Remark"])
    book.active.append(["Prices include tax."])
    sheet = book.create_sheet("Budget")
    sheet.append(["Item", "Cost in euros"])
    for i in range(40):
        sheet.append([f"Spare part {i}", 10 + i])
    sheet.append(["Zephyr telescope mount", 1875])
    book.save(path)


def write_xls(path: Path) -> None:
    import xlwt

    book = xlwt.Workbook()
    sheet = book.add_sheet("Inventory")
    for r, row in enumerate([["Part", "Storage bin"], ["Brass hinge", "A-3"], ["Cobalt flange gasket", "B-17"]]):
        for c, value in enumerate(row):
            sheet.write(r, c, value)
    book.save(str(path))


def write_ods(path: Path) -> None:
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    doc = OpenDocumentSpreadsheet()
    table = Table(name="Roster")
    for row in [["Volunteer", "Shift"], ["Henrik Dahl", "Monday morning"], ["Marisol Vantongeren", "Tuesday night"]]:
        tr = TableRow()
        for value in row:
            cell = TableCell(valuetype="string")
            cell.addElement(P(text=value))
            tr.addElement(cell)
        table.addElement(tr)
    doc.spreadsheet.addElement(table)
    doc.save(str(path))


def write_csv(path: Path) -> None:
    rows = ["town,founded,river"] + [f"Village {i},{1700 + i},Stream {i}" for i in range(30)]
    rows.append("Trellisport,1687,Aldermere")
    path.write_text("\n".join(rows) + "\n")


def write_odt(path: Path) -> None:
    from odf.opendocument import OpenDocumentText
    from odf.text import H, P

    doc = OpenDocumentText()
    doc.text.addElement(H(outlinelevel=1, text="Town chronicle"))
    doc.text.addElement(P(text="Notes gathered by the historical society."))
    doc.text.addElement(H(outlinelevel=2, text="Bakery history"))
    doc.text.addElement(P(text="The Okonkwo bakery first sold rye loaves in 1953."))
    doc.save(str(path))


def write_epub(path: Path) -> None:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("rag-test-book")
    book.set_title("Tales of the Coast")
    book.set_language("en")
    chapters = []
    for n, (title, text) in enumerate(
        [
            ("The Voyage", "The crew gathered at dawn on the quay and loaded barrels of fresh water."),
            ("The Storm", "The schooner Albatross Merrow lost her foremast off Cape Sable in the gale."),
        ],
        start=1,
    ):
        chapter = epub.EpubHtml(title=title, file_name=f"chapter{n}.xhtml", lang="en")
        chapter.content = f"<html><body><h1>{title}</h1><p>{text}</p></body></html>"
        book.add_item(chapter)
        chapters.append(chapter)
    book.toc = chapters
    book.spine = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    epub.write_epub(str(path), book)


def _message(subject: str, body: str, sender: str = "Ada Quist <ada@example.org>") -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = "team@example.org"
    message["Date"] = "Tue, 03 Sep 2024 09:30:00 +0000"
    message.set_content(body)
    return message


def write_eml(path: Path) -> None:
    message = _message("Quarterly audit schedule", "The Drummondville warehouse audit happens on the ninth of October.")
    minutes = _docx_bytes("Decisions", "The committee approved the Pellucid fountain restoration.")
    message.add_attachment(
        minutes,
        maintype="application",
        subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
        filename="minutes.docx",
    )
    path.write_bytes(bytes(message))


def write_mbox(path: Path) -> None:
    import mailbox

    box = mailbox.mbox(str(path))
    box.add(_message("Parking notice", "The car park is closed on Friday for repainting."))
    box.add(_message("Choir rehearsal", "Rehearsal of the Gloria moves to the Ashgrove chapel next week."))
    box.flush()
    box.close()


def write_ipynb(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Sensor study\nLoading the readings."),
        nbformat.v4.new_code_cell("import csv\nrows = list(csv.reader(open('readings.csv')))"),
        nbformat.v4.new_markdown_cell(
            "## Data cleaning\nReadings from the Halvorsen probe below 4 kelvin are dropped."
        ),
        nbformat.v4.new_code_cell("threshold_kelvin = 4  # the Halvorsen probe is unreliable below this"),
    ]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="x" * 5000)]
    path.write_text(nbformat.writes(nb))


def write_rtf(path: Path) -> None:
    # RTF is a text format; no maintained Python library writes it, so the file is spelled out.
    path.write_text(
        "{\\rtf1\\ansi\\deff0{\\fonttbl{\\f0 Times New Roman;}}\n"
        "\\f0\\fs24 Reservoir report.\\par\n\\par\n"
        "The Brackenfield dam holds {\\b forty-one million} cubic metres of water.\\par\n}"
    )


def write_tex(path: Path) -> None:
    path.write_text(
        "\\documentclass{article}\n\\title{Solver notes}\n\\begin{document}\n\\maketitle\n"
        "\\section{Method}\nWe use a \\emph{damped} iteration with step $h = 0.1$.\n"
        "\\section{Results}\nThe Kestrel solver converges in 37 iterations on the test grid.\n"
        "\\end{document}\n"
    )


def _text_image(lines: list[str]):  # -> PIL.Image.Image
    """Text drawn at about 12 pt and 300 dpi, black on white, as a scanner would see a printed page."""
    from matplotlib import font_manager
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), 50)
    image = Image.new("L", (2480, 200 + 90 * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((150, 100 + 90 * i), line, fill=0, font=font)
    return image


def write_png(path: Path) -> None:
    _text_image(["Ferry timetable", "The Wexford ferry leaves at 7:45 every morning."]).save(path)


def write_scanned_pdf(path: Path) -> None:
    """A text PDF (matplotlib writes a real text layer), then rasterised: its pages become pictures."""
    import matplotlib

    matplotlib.use("Agg")
    import pypdfium2 as pdfium
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    pages = [
        ["Annual report of the archive", "Visitors rose again this year."],
        ["Collections", "The Pemberton library holds 82,000 maps."],
    ]
    text_pdf = io.BytesIO()
    with PdfPages(text_pdf) as pdf:
        for lines in pages:
            fig = Figure(figsize=(8.27, 11.69))
            for i, line in enumerate(lines):
                fig.text(0.1, 0.9 - 0.05 * i, line, fontsize=14)
            pdf.savefig(fig)
    rendered = pdfium.PdfDocument(text_pdf.getvalue())
    images = [rendered[i].render(scale=300 / 72, grayscale=True).to_pil() for i in range(len(rendered))]
    images[0].save(path, save_all=True, append_images=images[1:], resolution=300)


def write_pdf_table(path: Path) -> None:
    """A PDF with a ruled table (cell borders drawn as lines), as reports and invoices have."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.27, 11.69))
    fig.text(0.1, 0.92, "Station measurements for the season", fontsize=14)
    ax = fig.add_axes((0.1, 0.4, 0.8, 0.45))
    ax.axis("off")
    rows = [["Station", "Rainfall (mm)", "Wind (km/h)"], ["Orvik", "412", "23"], ["Tarnby", "388", "31"]]
    rows += [[f"Post {i}", str(300 + i), str(10 + i)] for i in range(8)]
    rows += [["Skellhaven", "977", "54"]]
    ax.table(cellText=rows, loc="center", cellLoc="left")
    fig.savefig(path, format="pdf")


SAMPLES = [
    Sample(
        "notes.docx",
        write_docx,
        "How often is the Varnholm lighthouse lamp replaced?",
        "every fourteen months",
        "Lighthouse maintenance",
    ),
    Sample(
        "notes.docx",
        write_docx,
        "Which years did Ingrid Solberg serve as keeper?",
        "1921 to 1950",
        "Lighthouse maintenance",
    ),
    Sample(
        "growers.pptx",
        write_pptx,
        "How many crates does the Quillan orchard expect?",
        "3,400",
        "slide 2: Harvest forecast",
    ),
    Sample("budget.xlsx", write_xlsx, "What does the Zephyr telescope mount cost?", "1875", "sheet Budget, rows"),
    Sample(
        "stock.xls", write_xls, "Which storage bin holds the cobalt flange gasket?", "B-17", "sheet Inventory, rows"
    ),
    Sample(
        "roster.ods", write_ods, "Which shift does Marisol Vantongeren work?", "Tuesday night", "sheet Roster, rows"
    ),
    Sample("towns.csv", write_csv, "When was Trellisport founded?", "1687", "rows"),
    Sample(
        "chronicle.odt",
        write_odt,
        "When did the Okonkwo bakery first sell rye loaves?",
        "1953",
        "Town chronicle > Bakery history",
    ),
    Sample("coast.epub", write_epub, "Where did the Albatross Merrow lose her foremast?", "Cape Sable", "The Storm"),
    Sample(
        "audit.eml",
        write_eml,
        "When is the Drummondville warehouse audit?",
        "ninth of October",
        "Quarterly audit schedule",
    ),
    Sample(
        "lists.mbox", write_mbox, "Where does rehearsal of the Gloria move to?", "Ashgrove chapel", "Choir rehearsal"
    ),
    Sample(
        "study.ipynb",
        write_ipynb,
        "Which readings of the Halvorsen probe are dropped?",
        "below 4 kelvin",
        "Sensor study > Data cleaning",
    ),
    Sample(
        "reservoir.rtf",
        write_rtf,
        "How much water does the Brackenfield dam hold?",
        "forty-one million cubic metres",
        "chunk 1",
    ),
    Sample("solver.tex", write_tex, "How many iterations does the Kestrel solver need?", "37 iterations", "Results"),
    Sample("ferry.png", write_png, "When does the Wexford ferry leave?", "7:45", "chunk 1", ocr=True),
    Sample(
        "archive-scan.pdf",
        write_scanned_pdf,
        "How many maps does the Pemberton library hold?",
        "82,000",
        "page 2",
        ocr=True,
    ),
    Sample("stations.pdf", write_pdf_table, "How much rainfall did Skellhaven station record?", "977", "table 1"),
]
# The e-mail's attachment is a document of its own, at the message's path plus its name.
ATTACHMENT = ("audit.eml/minutes.docx", "What restoration did the committee approve?", "Pellucid fountain")


def write_all(folder: Path, *, ocr: bool = True) -> list[Sample]:
    """Write every sample into ``folder`` (the OCR ones only with ``ocr``); returns those written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for sample in SAMPLES:
        if sample.ocr and not ocr:
            continue
        sample.write(folder / sample.name)
        written.append(sample)
    return written
