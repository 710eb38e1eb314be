"""The household library `hearth bench answers` asks about: eleven made-up but realistic files in
eight formats (written at run time, the same text each run), 25 questions they answer
(each with the file that answers it and the facts the answer must carry) and 6 they do not.

Written for this benchmark; not the held-back check of issue 14. Facts are alternatives groups:
every group must match, a group matches when any of its strings appears in the answer
(case-insensitive, whitespace collapsed).
"""

from __future__ import annotations

import datetime
import html
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

_FIXED = datetime.datetime(2025, 3, 1)  # the same bytes each run


@dataclass(frozen=True)
class Question:
    text: str
    file: str | None  # the file that answers it; None: the documents do not
    facts: tuple[tuple[str, ...], ...] = ()


BOILER = [
    ("Calora Combi 28 - User guide", []),
    (
        "Water pressure",
        [
            "The pressure gauge on the front panel should read between 1.0 and 1.5 bar when the"
            " heating is cold. If it falls below 0.8 bar the boiler stops and shows fault code"
            " F22. Top up through the filling loop under the boiler until the needle reaches"
            " 1.2 bar, then close both filling valves.",
        ],
    ),
    (
        "Fault codes",
        [
            "F22: low water pressure, see Water pressure. F28: the burner did not light; check"
            " that the gas supply is on, then press the reset button and hold it for 5 seconds."
            " F75: the pump is not circulating water; call an engineer. A flashing blue light"
            " means the frost protection is running and is not a fault.",
        ],
    ),
    (
        "Servicing and warranty",
        [
            "Have the boiler serviced once a year by a Gas Safe registered engineer. The 7 year"
            " warranty applies only if the boiler is registered within 30 days of installation"
            " and every annual service is recorded in the logbook.",
        ],
    ),
]

POLICY = [
    ("Home insurance policy schedule", []),
    (
        "Your policy",
        [
            "Policyholder: Sam and Alex Whitmore. Policy number HH-4471-2209. Period of cover:"
            " 14 March 2025 to 13 March 2026. Insurer: Brightwater Mutual.",
        ],
    ),
    (
        "What is covered",
        [
            "Buildings cover up to £350,000 and contents cover up to £45,000. Single items worth"
            " more than £1,500 must be listed on the schedule to be covered in full. Accidental"
            " damage is not included unless the Accidental Damage add-on is shown on this"
            " schedule.",
        ],
    ),
    (
        "Excess and claims",
        [
            "The standard excess is £250 for each claim. Claims for escape of water have an"
            " excess of £500. To make a claim call 0800 046 7712, open 24 hours a day, and"
            " quote your policy number.",
        ],
    ),
]

RECIPES = """# Family recipes

## Red lentil soup (serves 4)

Soften one chopped onion and two carrots in olive oil. Add 200 g red lentils, one tin of
chopped tomatoes and 1.2 litres of vegetable stock. Simmer for 25 minutes, then blend until
smooth. A squeeze of lemon at the end lifts it.

## Banana bread

Mash three ripe bananas with 75 g melted butter. Stir in 150 g sugar, one egg and a teaspoon of
bicarbonate of soda, then fold in 190 g plain flour. Bake in a lined loaf tin at 175 °C for
60 minutes, until a skewer comes out clean.

## Sunday pancakes (makes 12)

Whisk 3 eggs with 300 ml milk and 150 g flour. Rest the batter for 30 minutes before cooking.
"""

SCHOOL = """<!doctype html><html><head><meta charset="utf-8"><title>Year 4 newsletter</title>
</head><body>
<h1>Oakfield Primary School - Year 4 newsletter, May</h1>
<h2>Museum trip</h2>
<p>Year 4 will visit the Natural History Museum on Thursday 12 June. The coach leaves school at
8:45 am and returns by 3:30 pm. The trip costs £18 per child, payable on ParentPay. Please
return the consent form by Monday 2 June. Children need a packed lunch in a named bag.</p>
<h2>Dates for your diary</h2>
<ul><li>Sports day: Friday 20 June (reserve day Tuesday 24 June)</li>
<li>INSET day, school closed to pupils: Friday 27 June</li>
<li>Last day of term: Wednesday 23 July, finishing at 1:30 pm</li></ul>
<h2>PE kit</h2>
<p>PE lessons for Year 4 are on Tuesdays and Thursdays. Earrings must be removed.</p>
</body></html>
"""

CAR_SERVICE = """date,mileage,garage,work done,cost
2023-03-08,39560,Hartley Motors,annual service: oil and filter,£189.00
2023-09-14,44105,Hartley Motors,MOT: passed; wiper blades replaced,£72.50
2024-03-11,48210,Hartley Motors,full service; front brake pads replaced,£312.40
2024-09-02,52870,QuickFit Leeds,MOT: passed with advisory on rear tyres,£54.85
2025-01-20,55034,QuickFit Leeds,four new tyres (Michelin Primacy 4),£468.00
2025-03-17,57480,Hartley Motors,service; air-con regas; timing belt due at 100000,£265.00
"""

DENTIST = (
    "Riverside Dental <appointments@riverside-dental.example>",
    "Appointment confirmation - Tuesday 8 April",
    "Dear Alex,\n\nThis is to confirm your check-up with Dr Okafor at Riverside Dental on"
    " Tuesday 8 April at 3:40 pm. The surgery is at 14 Mill Lane, first floor.\n\nIf you"
    " need to cancel or move the appointment, please give us at least 48 hours' notice;"
    " missed appointments and late cancellations are charged a £30 fee.\n\nA check-up and"
    " scale-and-polish costs £65 on our practice plan.\n\nKind regards,\nRiverside Dental\n",
)

ALLOTMENT = [
    ("Greenway Allotment Society", ["Welcome to plot holders, season 2025"]),
    ("Your plot", ["Plot 17, Greenway site, half plot (125 square metres)", "Annual fee: £42"]),
    (
        "Rules",
        [
            "Bonfires only from November to February, after 6 pm",
            "No hosepipes: fill watering cans from the troughs",
            "Keep the path beside your plot mown",
        ],
    ),
    ("Contacts", ["Site secretary: Margaret Hollis, 07700 900461", "Gate code: 4471"]),
]

ROUTER = """Broadband and wifi - household notes

Provider: Streamline Fibre, 150 Mb package, £29.99 a month. The contract ends on 30 November
2025; after that the price goes up unless we renew. Support line: 0330 088 1250.

The router admin page is at 192.168.1.1 (password on the sticker underneath).
Main wifi: Whitmore-Home. Guest network: Whitmore-Guest, password sunflower-27.
If the wifi drops, switch the router off for 30 seconds before turning it back on.
"""

BINS = """Bin collections - Calder Road

General waste (black bin): every other Monday, next one 2 June.
Recycling (blue bin): every other Wednesday. Glass goes in the green box, not the blue bin.
Garden waste (brown bin): fortnightly from March to November, needs a permit: £55 a year from
the council website.
Put bins out by 7 am on collection day. Bulky items: book a collection, £25 for up to three items.
"""

VET = [
    ("Biscuit - pet health record", []),
    (
        "About Biscuit",
        [
            "Biscuit is a four-year-old beagle, microchip number 826 0981 0045 1123, registered"
            " at Fernbank Veterinary Clinic.",
        ],
    ),
    (
        "Vaccinations and treatments",
        [
            "Annual booster (DHP and leptospirosis) given 15 October 2024; next due 15 October"
            " 2025. Kennel cough vaccine given at the same visit. Flea and worming tablet"
            " every 3 months.",
        ],
    ),
    ("Diet", ["Biscuit has a chicken allergy: feed only the salmon and rice food."]),
]

INVENTORY = [
    ("item", "room", "bought", "price", "warranty until"),
    ("Washing machine (Bosch Series 6)", "utility room", "2023-06-02", 549, "2026-06-02"),
    ("Fridge freezer (Samsung RB38)", "kitchen", "2022-11-19", 699, "2024-11-19"),
    ("Television (LG 55 inch OLED)", "living room", "2024-01-05", 1299, "2029-01-05"),
    ("Dishwasher (Miele G 5210)", "kitchen", "2021-04-30", 649, "2023-04-30"),
]

QUESTIONS = (
    Question("What pressure should the boiler gauge show when the heating is cold?",
             "boiler-manual.pdf", (("1.0",), ("1.5",))),
    Question("What does fault code F22 mean on the boiler?", "boiler-manual.pdf",
             (("pressure",),)),
    Question("How long do I hold the boiler reset button?", "boiler-manual.pdf",
             (("5 seconds", "five seconds"),)),
    Question("How long is the boiler warranty?", "boiler-manual.pdf",
             (("7 year", "seven year"),)),
    Question("What is our home insurance policy number?", "home-insurance.docx",
             (("HH-4471-2209",),)),
    Question("What is the excess for an escape of water claim?", "home-insurance.docx",
             (("500",),)),
    Question("How much contents cover does the home insurance give?", "home-insurance.docx",
             (("45,000", "45000"),)),
    Question("What number do I call to make a home insurance claim?", "home-insurance.docx",
             (("0800 046 7712",),)),
    Question("How long should the lentil soup simmer?", "recipes.md", (("25 minutes",),)),
    Question("At what temperature is the banana bread baked?", "recipes.md", (("175",),)),
    Question("How many eggs go into the pancakes?", "recipes.md", (("3 eggs", "three eggs"),)),
    Question("How much does the Year 4 museum trip cost?", "school-newsletter.html",
             (("18",),)),
    Question("When must the museum trip consent form be returned?", "school-newsletter.html",
             (("2 June",),)),
    Question("When is the INSET day when school is closed?", "school-newsletter.html",
             (("27 June",),)),
    Question("How much did the four new Michelin tyres cost?", "car-service.csv",
             (("468",),)),
    Question("What was the mileage at the March 2024 car service?", "car-service.csv",
             (("48210", "48,210"),)),
    Question("When is the dentist appointment with Dr Okafor?", "dentist-appointment.eml",
             (("8 April",), ("3:40",))),
    Question("What is the dentist's fee for a late cancellation?", "dentist-appointment.eml",
             (("30",),)),
    Question("What is the annual fee for the allotment plot?", "allotment-society.pptx",
             (("42",),)),
    Question("When are bonfires allowed on the allotment?", "allotment-society.pptx",
             (("November",), ("February",))),
    Question("When does the broadband contract end?", "broadband-notes.txt",
             (("30 November",),)),
    Question("What is the guest wifi password?", "broadband-notes.txt", (("sunflower-27",),)),
    Question("How much is the garden waste permit?", "bin-collections.txt", (("55",),)),
    Question("When is Biscuit's next booster vaccination due?", "biscuit-pet-record.docx",
             (("15 October 2025",),)),
    Question("Until when is the washing machine under warranty?", "home-inventory.xlsx",
             (("2026",),)),
    # the documents do not answer these: near misses first, then far ones
    Question("What is the excess on our car insurance?", None),
    Question("What time does the school day start?", None),
    Question("How many calories are in a slice of banana bread?", None),
    Question("What is the name of our electricity supplier?", None),
    Question("When is Biscuit's next appointment with the groomer?", None),
    Question("What is my pension provider's phone number?", None),
)  # fmt: skip


def _pdf(path: Path, sections: list[tuple[str, list[str]]]) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate

    styles = getSampleStyleSheet()
    story = []
    for i, (head, paras) in enumerate(sections):
        story.append(Paragraph(html.escape(head), styles["Title" if i == 0 else "Heading2"]))
        story += [Paragraph(html.escape(p), styles["BodyText"]) for p in paras]
    SimpleDocTemplate(str(path), pagesize=A4, invariant=1).build(story)


def _docx(path: Path, sections: list[tuple[str, list[str]]]) -> None:
    import docx

    doc = docx.Document()
    for i, (head, paras) in enumerate(sections):
        doc.add_heading(head, level=1 if i == 0 else 2)
        for p in paras:
            doc.add_paragraph(p)
    doc.core_properties.created = doc.core_properties.modified = _FIXED
    doc.save(str(path))


def _pptx(path: Path, slides: list[tuple[str, list[str]]]) -> None:
    import pptx

    deck = pptx.Presentation()
    for title, lines in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        body = slide.placeholders[1].text_frame
        body.text = lines[0]
        for line in lines[1:]:
            body.add_paragraph().text = line
    deck.save(str(path))


def _xlsx(path: Path, rows: Sequence[Sequence[object]]) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Appliances"
    for row in rows:
        sheet.append(list(row))
    book.save(str(path))


def _eml(path: Path, sender: str, subject: str, body: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "alex@whitmore.example", subject
    msg["Date"] = "Mon, 24 Mar 2025 10:12:00 +0000"
    msg.set_content(body)
    path.write_bytes(bytes(msg))


def write_library(folder: Path) -> list[Path]:
    """The twelve files, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    f = folder.__truediv__
    _pdf(f("boiler-manual.pdf"), BOILER)
    _docx(f("home-insurance.docx"), POLICY)
    f("recipes.md").write_text(RECIPES)
    f("school-newsletter.html").write_text(SCHOOL)
    f("car-service.csv").write_text(CAR_SERVICE)
    _eml(f("dentist-appointment.eml"), *DENTIST)
    _pptx(f("allotment-society.pptx"), ALLOTMENT)
    f("broadband-notes.txt").write_text(ROUTER)
    f("bin-collections.txt").write_text(BINS)
    _docx(f("biscuit-pet-record.docx"), VET)
    _xlsx(f("home-inventory.xlsx"), INVENTORY)
    return sorted(folder.iterdir())
