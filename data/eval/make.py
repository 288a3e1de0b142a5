"""Write the bundled evaluation tasks, configs/eval/tasks, and their items, data/eval, from the facts
below (a development tool, not part of the runtime package):

    .venv/bin/python data/eval/make.py

Two groups of lm-eval tasks, one task per language of the model (en, de, es, fr, it, nl, pt), over
local JSON-lines files, so that `make eval` runs on any machine with no data set to fetch:

- `stablelm2_cloze_<lang>` (multiple choice, 0-shot): a sentence to complete with one of four words:
  capital cities, the day or month that follows another, antonyms. Distractors are answers of the same
  kind, so the right one is the only fact that fits.
- `stablelm2_gen_<lang>` (generation, 3-shot, exact match): short questions (sums, products, capitals,
  the day after) answered by a word or a number.

Every item is a real fact written out here, never generated text; the same facts in every language,
so scores compare across languages. A few items of each task (FEWSHOT) form its `train` split, the
few-shot examples; the rest are the `test` split. The output is deterministic (seeded by strings),
and a test checks that the committed files are what this writes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common.files import write_text
from evaluation.tasks import ITEMS_DIR, REPO_ROOT, TASKS_DIR

__all__ = ["LANGUAGES", "write_tasks"]

FEWSHOT = 5  # items per task and language kept for the few-shot split
HEADER = "# Written by data/eval/make.py: edit that script, then run it.\n"


@dataclass(frozen=True)
class Language:
    """The facts and sentence frames of one language. A `country` is written as it follows the frame's
    preposition (French, Italian and Portuguese contract it with the article: "de la France")."""

    days: tuple[str, ...]  # Monday first
    months: tuple[str, ...]
    capitals: tuple[tuple[str, str], ...]  # (country, capital)
    antonyms: tuple[tuple[str, str], ...]
    capital_cloze: str
    day_cloze: str
    month_cloze: str
    antonym_cloze: str
    question: str  # a question and the answer cue: "Question: {q}\nAnswer:"
    capital_question: str
    day_question: str
    sum_question: str
    product_question: str


# fmt: off
LANGUAGES: dict[str, Language] = {
    "en": Language(
        days=("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
        months=(
            "January", "February", "March", "April", "May", "June",
            "July", "August", "September", "October", "November", "December",
        ),
        capitals=(
            ("France", "Paris"), ("Germany", "Berlin"), ("Spain", "Madrid"), ("Italy", "Rome"),
            ("Portugal", "Lisbon"), ("Japan", "Tokyo"), ("Greece", "Athens"), ("Austria", "Vienna"),
            ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Ireland", "Dublin"), ("Belgium", "Brussels"),
        ),
        antonyms=(
            ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("day", "night"), ("good", "bad"),
            ("rich", "poor"), ("high", "low"), ("full", "empty"), ("long", "short"), ("wet", "dry"),
        ),
        capital_cloze="The capital of {country} is",
        day_cloze="The day after {day} is",
        month_cloze="The month after {month} is",
        antonym_cloze="The opposite of {word} is",
        question="Question: {q}\nAnswer:",
        capital_question="What is the capital of {country}?",
        day_question="Which day comes after {day}?",
        sum_question="How much is {a} plus {b}?",
        product_question="How much is {a} times {b}?",
    ),
    "de": Language(
        days=("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"),
        months=(
            "Januar", "Februar", "März", "April", "Mai", "Juni",
            "Juli", "August", "September", "Oktober", "November", "Dezember",
        ),
        capitals=(
            ("Frankreich", "Paris"), ("Deutschland", "Berlin"), ("Spanien", "Madrid"), ("Italien", "Rom"),
            ("Portugal", "Lissabon"), ("Japan", "Tokio"), ("Griechenland", "Athen"), ("Österreich", "Wien"),
            ("Norwegen", "Oslo"), ("Schweden", "Stockholm"), ("Irland", "Dublin"), ("Belgien", "Brüssel"),
        ),
        antonyms=(
            ("heiß", "kalt"), ("groß", "klein"), ("schnell", "langsam"), ("Tag", "Nacht"),
            ("gut", "schlecht"), ("reich", "arm"), ("hoch", "niedrig"), ("voll", "leer"), ("lang", "kurz"),
            ("nass", "trocken"),
        ),
        capital_cloze="Die Hauptstadt von {country} ist",
        day_cloze="Der Tag nach {day} ist",
        month_cloze="Der Monat nach {month} ist",
        antonym_cloze="Das Gegenteil von {word} ist",
        question="Frage: {q}\nAntwort:",
        capital_question="Was ist die Hauptstadt von {country}?",
        day_question="Welcher Tag kommt nach {day}?",
        sum_question="Wie viel ist {a} plus {b}?",
        product_question="Wie viel ist {a} mal {b}?",
    ),
    "es": Language(
        days=("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
        months=(
            "enero", "febrero", "marzo", "abril", "mayo", "junio",
            "julio", "agosto", "septiembre", "octubre", "noviembre", "diciembre",
        ),
        capitals=(
            ("Francia", "París"), ("Alemania", "Berlín"), ("España", "Madrid"), ("Italia", "Roma"),
            ("Portugal", "Lisboa"), ("Japón", "Tokio"), ("Grecia", "Atenas"), ("Austria", "Viena"),
            ("Noruega", "Oslo"), ("Suecia", "Estocolmo"), ("Irlanda", "Dublín"), ("Bélgica", "Bruselas"),
        ),
        antonyms=(
            ("caliente", "frío"), ("grande", "pequeño"), ("rápido", "lento"), ("día", "noche"),
            ("bueno", "malo"), ("rico", "pobre"), ("alto", "bajo"), ("lleno", "vacío"), ("largo", "corto"),
            ("mojado", "seco"),
        ),
        capital_cloze="La capital de {country} es",
        day_cloze="El día después del {day} es",
        month_cloze="El mes después de {month} es",
        antonym_cloze="Lo contrario de {word} es",
        question="Pregunta: {q}\nRespuesta:",
        capital_question="¿Cuál es la capital de {country}?",
        day_question="¿Qué día viene después del {day}?",
        sum_question="¿Cuánto es {a} más {b}?",
        product_question="¿Cuánto es {a} por {b}?",
    ),
    "fr": Language(
        days=("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"),
        months=(
            "janvier", "février", "mars", "avril", "mai", "juin",
            "juillet", "août", "septembre", "octobre", "novembre", "décembre",
        ),
        capitals=(
            ("de la France", "Paris"), ("de l'Allemagne", "Berlin"), ("de l'Espagne", "Madrid"),
            ("de l'Italie", "Rome"), ("du Portugal", "Lisbonne"), ("du Japon", "Tokyo"),
            ("de la Grèce", "Athènes"), ("de l'Autriche", "Vienne"), ("de la Norvège", "Oslo"),
            ("de la Suède", "Stockholm"), ("de l'Irlande", "Dublin"), ("de la Belgique", "Bruxelles"),
        ),
        antonyms=(
            ("chaud", "froid"), ("grand", "petit"), ("rapide", "lent"), ("jour", "nuit"), ("bon", "mauvais"),
            ("riche", "pauvre"), ("haut", "bas"), ("plein", "vide"), ("long", "court"), ("mouillé", "sec"),
        ),
        capital_cloze="La capitale {country} est",
        day_cloze="Le jour qui suit {day} est",
        month_cloze="Le mois qui suit {month} est",
        antonym_cloze="Le contraire de {word} est",
        question="Question : {q}\nRéponse :",
        capital_question="Quelle est la capitale {country} ?",
        day_question="Quel jour vient après {day} ?",
        sum_question="Combien font {a} plus {b} ?",
        product_question="Combien font {a} fois {b} ?",
    ),
    "it": Language(
        days=("lunedì", "martedì", "mercoledì", "giovedì", "venerdì", "sabato", "domenica"),
        months=(
            "gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno",
            "luglio", "agosto", "settembre", "ottobre", "novembre", "dicembre",
        ),
        capitals=(
            ("della Francia", "Parigi"), ("della Germania", "Berlino"), ("della Spagna", "Madrid"),
            ("dell'Italia", "Roma"), ("del Portogallo", "Lisbona"), ("del Giappone", "Tokyo"),
            ("della Grecia", "Atene"), ("dell'Austria", "Vienna"), ("della Norvegia", "Oslo"),
            ("della Svezia", "Stoccolma"), ("dell'Irlanda", "Dublino"), ("del Belgio", "Bruxelles"),
        ),
        antonyms=(
            ("caldo", "freddo"), ("grande", "piccolo"), ("veloce", "lento"), ("giorno", "notte"),
            ("buono", "cattivo"), ("ricco", "povero"), ("alto", "basso"), ("pieno", "vuoto"),
            ("lungo", "corto"), ("bagnato", "asciutto"),
        ),
        capital_cloze="La capitale {country} è",
        day_cloze="Il giorno dopo {day} è",
        month_cloze="Il mese dopo {month} è",
        antonym_cloze="Il contrario di {word} è",
        question="Domanda: {q}\nRisposta:",
        capital_question="Qual è la capitale {country}?",
        day_question="Quale giorno viene dopo {day}?",
        sum_question="Quanto fa {a} più {b}?",
        product_question="Quanto fa {a} per {b}?",
    ),
    "nl": Language(
        days=("maandag", "dinsdag", "woensdag", "donderdag", "vrijdag", "zaterdag", "zondag"),
        months=(
            "januari", "februari", "maart", "april", "mei", "juni",
            "juli", "augustus", "september", "oktober", "november", "december",
        ),
        capitals=(
            ("Frankrijk", "Parijs"), ("Duitsland", "Berlijn"), ("Spanje", "Madrid"), ("Italië", "Rome"),
            ("Portugal", "Lissabon"), ("Japan", "Tokio"), ("Griekenland", "Athene"), ("Oostenrijk", "Wenen"),
            ("Noorwegen", "Oslo"), ("Zweden", "Stockholm"), ("Ierland", "Dublin"), ("België", "Brussel"),
        ),
        antonyms=(
            ("heet", "koud"), ("groot", "klein"), ("snel", "langzaam"), ("dag", "nacht"), ("goed", "slecht"),
            ("rijk", "arm"), ("hoog", "laag"), ("vol", "leeg"), ("lang", "kort"), ("nat", "droog"),
        ),
        capital_cloze="De hoofdstad van {country} is",
        day_cloze="De dag na {day} is",
        month_cloze="De maand na {month} is",
        antonym_cloze="Het tegenovergestelde van {word} is",
        question="Vraag: {q}\nAntwoord:",
        capital_question="Wat is de hoofdstad van {country}?",
        day_question="Welke dag komt na {day}?",
        sum_question="Hoeveel is {a} plus {b}?",
        product_question="Hoeveel is {a} keer {b}?",
    ),
    "pt": Language(
        days=(
            "segunda-feira", "terça-feira", "quarta-feira", "quinta-feira", "sexta-feira",
            "sábado", "domingo",
        ),
        months=(
            "janeiro", "fevereiro", "março", "abril", "maio", "junho",
            "julho", "agosto", "setembro", "outubro", "novembro", "dezembro",
        ),
        capitals=(
            ("da França", "Paris"), ("da Alemanha", "Berlim"), ("da Espanha", "Madrid"),
            ("da Itália", "Roma"), ("de Portugal", "Lisboa"), ("do Japão", "Tóquio"),
            ("da Grécia", "Atenas"), ("da Áustria", "Viena"), ("da Noruega", "Oslo"),
            ("da Suécia", "Estocolmo"), ("da Irlanda", "Dublin"), ("da Bélgica", "Bruxelas"),
        ),
        antonyms=(
            ("quente", "frio"), ("grande", "pequeno"), ("rápido", "lento"), ("dia", "noite"), ("bom", "mau"),
            ("rico", "pobre"), ("alto", "baixo"), ("cheio", "vazio"), ("longo", "curto"), ("molhado", "seco"),
        ),
        capital_cloze="A capital {country} é",
        day_cloze="O dia depois de {day} é",
        month_cloze="O mês depois de {month} é",
        antonym_cloze="O contrário de {word} é",
        question="Pergunta: {q}\nResposta:",
        capital_question="Qual é a capital {country}?",
        day_question="Que dia vem depois de {day}?",
        sum_question="Quanto é {a} mais {b}?",
        product_question="Quanto é {a} vezes {b}?",
    ),
}
# fmt: on

# The same numbers in every language: sums of two numbers up to 49, products of two up to 12.
_numbers = random.Random("stablelm2-arithmetic")
SUMS = tuple((_numbers.randint(2, 49), _numbers.randint(2, 49)) for _ in range(10))
PRODUCTS = tuple((_numbers.randint(2, 12), _numbers.randint(2, 12)) for _ in range(8))

# lm-eval task settings shared by a group's tasks (each task adds its name and data files).
CLOZE_TEMPLATE = r"""dataset_path: json
output_type: multiple_choice
training_split: train
fewshot_split: train
test_split: test
doc_to_text: question
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - {metric: acc, aggregation: mean, higher_is_better: true}
  - {metric: acc_norm, aggregation: mean, higher_is_better: true}
metadata: {version: 1.0}
"""
GENERATION_TEMPLATE = r"""dataset_path: json
output_type: generate_until
training_split: train
fewshot_split: train
test_split: test
doc_to_text: question
doc_to_target: answer
num_fewshot: 3
generation_kwargs: {until: ["\n", "."], do_sample: false, max_gen_toks: 10}
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
    regexes_to_ignore: ["^\\s+", "\\s+$"]  # surrounding whitespace
metadata: {version: 1.0}
"""
GROUPS = {
    "stablelm2_cloze": (CLOZE_TEMPLATE, ["acc", "acc_norm"]),
    "stablelm2_gen": (GENERATION_TEMPLATE, ["exact_match"]),
}


def cloze_items(code: str) -> list[dict[str, Any]]:
    """Sentences to complete with one of four choices: capitals, the next day, the next month, antonyms."""
    lang = LANGUAGES[code]
    frames = [
        ("capital", [(lang.capital_cloze.format(country=c), a) for c, a in lang.capitals]),
        ("day", [(lang.day_cloze.format(day=d), _next(lang.days, d)) for d in lang.days]),
        ("month", [(lang.month_cloze.format(month=m), _next(lang.months, m)) for m in lang.months]),
        ("antonym", [(lang.antonym_cloze.format(word=w), a) for w, a in lang.antonyms]),
    ]
    items = []
    for kind, pairs in frames:
        answers = sorted({answer for _, answer in pairs})
        for index, (question, answer) in enumerate(pairs):
            rng = random.Random(f"{code}/{kind}/{index}")
            choices = [*rng.sample([a for a in answers if a != answer], 3), answer]
            rng.shuffle(choices)
            item_id = f"{code}-{kind}-{index:02d}"
            items.append(
                {"id": item_id, "question": question, "choices": choices, "answer": choices.index(answer)}
            )
    return items


def generation_items(code: str) -> list[dict[str, Any]]:
    """Questions answered by one word or number: sums, products, capitals, the day after."""
    lang = LANGUAGES[code]
    frames = [
        ("sum", [(lang.sum_question.format(a=a, b=b), str(a + b)) for a, b in SUMS]),
        ("product", [(lang.product_question.format(a=a, b=b), str(a * b)) for a, b in PRODUCTS]),
        ("capital", [(lang.capital_question.format(country=c), a) for c, a in lang.capitals]),
        ("day", [(lang.day_question.format(day=d), _next(lang.days, d)) for d in lang.days]),
    ]
    return [
        {"id": f"{code}-{kind}-{index:02d}", "question": lang.question.format(q=question), "answer": answer}
        for kind, pairs in frames
        for index, (question, answer) in enumerate(pairs)
    ]


def _next(cycle: tuple[str, ...], item: str) -> str:
    return cycle[(cycle.index(item) + 1) % len(cycle)]


def split(items: list[dict[str, Any]], seed: str) -> dict[str, list[dict[str, Any]]]:
    """FEWSHOT items (a seeded choice) for the few-shot `train` split, the rest for `test`, in order."""
    held_out = set(random.Random(seed).sample(range(len(items)), FEWSHOT))
    return {
        "train": [item for i, item in enumerate(items) if i in held_out],
        "test": [item for i, item in enumerate(items) if i not in held_out],
    }


def write_tasks(root: Path = TASKS_DIR, items_root: Path = ITEMS_DIR) -> list[Path]:
    """Write every group's template, task YAML files and group YAML under `root`, and its items
    (JSONL) under `items_root`. The YAML files name their items relative to the repository root
    (ITEMS_DIR's place in it)."""
    written = []
    for group, (template, metrics) in GROUPS.items():
        folder = root / group
        written.append(write_text(folder / "_template_yaml", HEADER + template))
        make_items = cloze_items if group == "stablelm2_cloze" else generation_items
        for code in LANGUAGES:
            files = {}
            for name, items in split(make_items(code), f"{group}/{code}").items():
                path = items_root / group / f"{code}_{name}.jsonl"
                written.append(
                    write_text(path, "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items))
                )
                files[name] = (ITEMS_DIR.relative_to(REPO_ROOT) / group / path.name).as_posix()
            task = {"include": "_template_yaml", "task": f"{group}_{code}", "task_alias": code}
            task["dataset_kwargs"] = {"data_files": files}
            written.append(write_text(folder / f"{group}_{code}.yaml", _yaml(task)))
        members = {
            "group": group,
            "task": [f"{group}_{code}" for code in LANGUAGES],
            "aggregate_metric_list": [{"metric": m, "weight_by_size": True} for m in metrics],
            "metadata": {"version": 1.0},
        }
        written.append(write_text(folder / f"_{group}.yaml", _yaml(members)))
    return written


def _yaml(content: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(content, sort_keys=False, allow_unicode=True, width=110)


def main() -> None:
    written = write_tasks()
    print(f"wrote {len(written)} files under {TASKS_DIR} and {ITEMS_DIR}")


if __name__ == "__main__":
    main()
