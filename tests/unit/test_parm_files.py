"""Users' parm files load as they are (issue 11): real-life variants of the seed's
wa7_conf.ini and wa7.env. Each loads to exactly the reference settings, or to the exact
values it asks for, or gives one clear line (never a value: it may be a secret)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from pydantic import SecretStr

from matomo_kafka.config.load import load_config
from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import ConfigError
from support.parm import SEED_ENV, SEED_INI

BOM = b"\xef\xbb\xbf"
Shape = Callable[[str], str]

#: What the seed files (support/parm.py) say, every seed key spelled out.
REFERENCE = {
    "START_DATE": date(2023, 4, 1),
    "MATOMO_FILTER_LIMIT": 1000,
    "FILE_PATH_LAST_OFFSET": "/dz-matomo/applis/wa7/data/last_filter_offset",
    "FILE_PATH_FILTERDATE": "/dz-matomo/applis/wa7/data/filterdate",
    "COLONNE_ANNOMYSE": ("visitIp", "visitorId"),
    "SALAGE": "s3l%with%percent",
    "KAFKA_TOPIC": "wa7.matomo.visits",
    "MATOMO_ID_SITE": (6, 15),
    "MATOMO_API_URL": "https://sps-support-interne-int.example/WA7/4752/",
    "MATOMO_SPS_USER": "spsuser",
    "MATOMO_SPS_MDP": "sps-p@ss",
    "MATOMO_API_TOKEN": "0123456789abcdef",
    "KAFKA_SERVERS": "broker1:9093,broker2:9093",
    "CLUSTERID": "IN02",
    "KAFKA_USER": "wa7-producer",
    "KAFKA_PASSWORD": "kafka-pw-42",
}


def view(settings: Settings) -> dict[str, object]:
    """Every setting, secrets in clear (to compare them exactly)."""
    out: dict[str, object] = {}
    for key in Settings.model_fields:
        value = getattr(settings, key)
        out[key] = value.get_secret_value() if isinstance(value, SecretStr) else value
    return out


def write(directory: Path, ini: str | bytes, env: str | bytes = SEED_ENV) -> Path:
    directory.mkdir(exist_ok=True)
    for name, text in (("wa7_conf.ini", ini), ("wa7.env", env)):
        data = text if isinstance(text, bytes) else text.encode()
        (directory / name).write_bytes(data)
    return directory


def problems(directory: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(directory, environ={})
    return caught.value.problems


def reference(tmp_path: Path) -> dict[str, object]:
    return view(load_config(write(tmp_path / "reference", SEED_INI), environ={}).settings)


def each_line(change: Callable[[str, str], str]) -> Shape:
    """Rewrites every `KEY: value` line of a file as change(key, value)."""

    def shape(text: str) -> str:
        lines = []
        for line in text.splitlines():
            key, _, value = line.partition(":" if ":" in line.split("=")[0] else "=")
            lines.append(change(key.strip(), value.strip()))
        return "\n".join(lines) + "\n"

    return shape


def test_reference_seed_files(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, SEED_INI), environ={})
    seed_view = {key: value for key, value in view(loaded.settings).items() if key in REFERENCE}
    assert seed_view == REFERENCE
    assert loaded.warnings == []


SEPARATORS = ["{k}={v}", "{k} = {v}", "{k}:{v}", "{k} : {v}", "{k}\t:\t{v}", "{k}: {v}"]


def separators(text: str) -> str:
    lines = [line.split(":", 1) for line in text.splitlines()]
    return "".join(
        SEPARATORS[i % len(SEPARATORS)].format(k=k.strip(), v=v.strip()) + "\n"
        for i, (k, v) in enumerate(lines)
    )


def several_sections(text: str) -> str:
    lines = text.splitlines()
    return "\n".join(["[DEFAULT]", *lines[:2], "[paths]", *lines[2:4], "[kafka]", *lines[4:]])


def quote_plain_values(text: str) -> str:
    """Non-secret values in double then single quotes (SALAGE: see the quoted-salt test)."""
    out = []
    for i, line in enumerate(text.splitlines()):
        key, _, value = line.partition(":")
        quote = "\"'"[i % 2]
        out.append(line if key == "SALAGE" else f"{key}: {quote}{value.strip()}{quote}")
    return "\n".join(out) + "\n"


def comments(text: str) -> str:
    lines = text.splitlines()
    return "\n".join(
        ["# wa7_conf.ini of producerMatomo", "; another comment", "", *lines[:3], "",
         "    # an indented comment", "#KAFKA_TOPIC: commented.out.topic",
         ";START_DATE: 1999-01-01", *lines[3:], "# the end"]
    )  # fmt: skip


INI_SHAPES: dict[str, Shape] = {
    "CRLF line endings": lambda t: t.replace("\n", "\r\n"),
    "[DEFAULT] section": lambda t: "[DEFAULT]\n" + t,
    "a named section": lambda t: "[wa7]\n" + t,
    "several sections": several_sections,
    "same value in [DEFAULT] and a section": lambda t: (
        "[DEFAULT]\n" + t + "[prod]\nKAFKA_TOPIC = wa7.matomo.visits\n"
    ),
    "keys before the first section": lambda t: t.replace("FILE_PATH_LAST", "[wa7]\nFILE_PATH_LAST"),
    "every separator": separators,
    "lowercase keys": each_line(lambda k, v: f"{k.lower()}: {v}"),
    "mixed-case keys": each_line(lambda k, v: f"{k.title()} : {v}"),
    "tabs and trailing blanks": each_line(lambda k, v: f"\t{k}:\t{v} \t "),
    "quoted non-secret values": quote_plain_values,
    "full-line comments and blank lines": comments,
    "a continuation line": lambda t: t.replace("visitIp,visitorId", "visitIp,\n    visitorId"),
    "empty optional value": lambda t: t.replace(" : 1000", ":"),
}  # fmt: skip


@pytest.mark.parametrize("shape", INI_SHAPES.values(), ids=INI_SHAPES.keys())
def test_ini_variants_load_the_reference_settings(tmp_path: Path, shape: Shape) -> None:
    text = shape(SEED_INI)
    assert text != SEED_INI
    loaded = load_config(write(tmp_path, text), environ={})
    assert view(loaded.settings) == reference(tmp_path)
    assert loaded.warnings == []


ENV_SHAPES: dict[str, Shape] = {
    "CRLF line endings": lambda t: t.replace("\n", "\r\n"),
    "export": lambda t: "".join(f"export {line}\n" for line in t.splitlines()),
    "single quotes": lambda t: t.replace('"', "'"),
    "unquoted": lambda t: t.replace('"', ""),
    "spaces around =": lambda t: t.replace("=", " = "),
    "comments after values": lambda t: (
        "# wa7.env\n" + t.replace('CLUSTERID="IN02"', "CLUSTERID=IN02 # the cluster")
        .replace('"6,15"', '"6,15"   # the sites')
    ),
    "lowercase names": each_line(lambda k, v: f"{k.lower()}={v}"),
    "trailing blanks": lambda t: t.replace("\n", " \t\n"),
}  # fmt: skip


@pytest.mark.parametrize("shape", ENV_SHAPES.values(), ids=ENV_SHAPES.keys())
def test_env_variants_load_the_reference_settings(tmp_path: Path, shape: Shape) -> None:
    text = shape(SEED_ENV)
    assert text != SEED_ENV
    loaded = load_config(write(tmp_path, SEED_INI, text), environ={})
    assert view(loaded.settings) == reference(tmp_path)
    assert loaded.warnings == []


@pytest.mark.parametrize("crlf", [False, True], ids=["LF", "CRLF"])
def test_utf8_bom_in_both_files(tmp_path: Path, crlf: bool) -> None:
    """Windows editors start files with a BOM: the first key stays readable."""
    ini, env = SEED_INI, SEED_ENV
    if crlf:
        ini, env = ini.replace("\n", "\r\n"), env.replace("\n", "\r\n")
    loaded = load_config(write(tmp_path, BOM + ini.encode(), BOM + env.encode()), environ={})
    assert view(loaded.settings) == reference(tmp_path)


def seed_ini_with(**values: str) -> str:
    """The seed's ini with these keys' lines replaced (value text as written in the file)."""
    text = SEED_INI
    for key, value in values.items():
        text = re.sub(rf"^{key}\s*:.*$", lambda _m, k=key, v=value: f"{k}: {v}", text, flags=re.M)
    return text


@pytest.mark.parametrize(
    ("line", "salt"),
    [
        ("s3l%(x)s%%%-long-enough", "s3l%(x)s%%%-long-enough"),  # no interpolation
        ("s3l%with%percent # my salt", "s3l%with%percent # my salt"),  # no inline comments
        ("s3l ; with ; semicolons", "s3l ; with ; semicolons"),
        ("s3l#with#hash#signs", "s3l#with#hash#signs"),
        ("  s3l%with%percent\t ", "s3l%with%percent"),  # configparser trims the value
    ],
)
def test_salt_is_read_verbatim(tmp_path: Path, line: str, salt: str) -> None:
    """As producerMatomo's configparser read it: a changed salt changes every pseudonym."""
    loaded = load_config(write(tmp_path, seed_ini_with(SALAGE=line)), environ={})
    assert view(loaded.settings) == {**reference(tmp_path), "SALAGE": salt}
    assert loaded.warnings == []  # nothing said about a secret's content


@pytest.mark.parametrize("quote", ['"', "'"])
def test_quoted_salt_keeps_its_quotes_and_says_so(tmp_path: Path, quote: str) -> None:
    parm = write(tmp_path, seed_ini_with(SALAGE=f"{quote}s3l%with%percent{quote}"))
    loaded = load_config(parm, environ={})
    assert view(loaded.settings) == {
        **reference(tmp_path),
        "SALAGE": f"{quote}s3l%with%percent{quote}",
    }
    assert loaded.warnings == [
        f"SALAGE: the quotes around its value in {parm / 'wa7_conf.ini'} are part of it "
        "(configparser keeps them, as producerMatomo did)"
    ]  # fmt: skip


def test_windows_paths(tmp_path: Path) -> None:
    ini = seed_ini_with(
        FILE_PATH_LAST_OFFSET=r"C:\data\last_filter_offset",
        FILE_PATH_FILTERDATE=r'"C:\data\filterdate"',
    )
    settings = load_config(write(tmp_path, ini), environ={}).settings
    assert settings.FILE_PATH_LAST_OFFSET == r"C:\data\last_filter_offset"
    assert settings.FILE_PATH_FILTERDATE == r"C:\data\filterdate"
    assert view(settings) == {
        **reference(tmp_path),
        "FILE_PATH_LAST_OFFSET": r"C:\data\last_filter_offset",
        "FILE_PATH_FILTERDATE": r"C:\data\filterdate",
    }


def test_windows_path_in_env_file(tmp_path: Path) -> None:
    """wa7.env follows dotenv: single quotes verbatim, backslashes doubled in double quotes."""
    ini = seed_ini_with(FILE_PATH_LAST_OFFSET="/d/offset", FILE_PATH_FILTERDATE="/d/date")
    env = SEED_ENV + "FILE_PATH_LAST_OFFSET='C:\\data\\offset'\n"
    env += 'FILE_PATH_FILTERDATE="C:\\\\data\\\\filterdate"\n'
    settings = load_config(write(tmp_path, ini, env), environ={}).settings
    assert settings.FILE_PATH_LAST_OFFSET == r"C:\data\offset"
    assert settings.FILE_PATH_FILTERDATE == r"C:\data\filterdate"


def test_empty_values(tmp_path: Path) -> None:
    """Empty optional values are unset; no columns and no salt is a valid configuration."""
    ini = seed_ini_with(COLONNE_ANNOMYSE="", SALAGE="", MATOMO_FILTER_LIMIT="")
    env = SEED_ENV.replace('MATOMO_SPS_USER="spsuser"', "MATOMO_SPS_USER=").replace(
        'MATOMO_SPS_MDP="sps-p@ss"', "MATOMO_SPS_MDP=''"
    )
    settings = load_config(write(tmp_path, ini, env), environ={}).settings
    assert view(settings) == {
        **reference(tmp_path),
        "COLONNE_ANNOMYSE": (),
        "SALAGE": None,
        "MATOMO_SPS_USER": None,
        "MATOMO_SPS_MDP": None,
    }


def test_env_file_secrets_as_dotenv_gives_them(tmp_path: Path) -> None:
    """In wa7.env (shell rules, as dotenv): quoted text is kept whole, spaces included; an
    unquoted ` #` starts a comment, as it does for the shell."""
    env = SEED_ENV.replace('"sps-p@ss"', '"  sps p@ss # not a comment "').replace(
        '"kafka-pw-42"', "kafka-pw-42 # a comment"
    )
    settings = load_config(write(tmp_path, SEED_INI, env), environ={}).settings
    assert view(settings) == {
        **reference(tmp_path),
        "MATOMO_SPS_MDP": "  sps p@ss # not a comment ",
        "KAFKA_PASSWORD": "kafka-pw-42",
    }


def ini_path(parm: Path) -> Path:
    return parm / "wa7_conf.ini"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[DEFAULT]\n" + SEED_INI + "[prod]\nKAFKA_TOPIC: prod.visits\n",
         "KAFKA_TOPIC: set twice with different values in {ini} ([DEFAULT] and [prod])"),
        (SEED_INI + "[prod]\nkafka_topic = prod.visits\n",
         "KAFKA_TOPIC: set twice with different values in {ini} (top of file and [prod])"),
        ("[DEFAULT]\n" + SEED_INI + "[a]\nKAFKA_TOPIC: a\n[b]\nKAFKA_TOPIC: b\n",
         "KAFKA_TOPIC: set 3 times with different values in {ini} ([DEFAULT], [a] and [b])"),
        ("[a]\nSALAGE: one-secret\n[b]\nSALAGE: other-secret\n" + SEED_INI.replace("SALAGE", "#"),
         "SALAGE: set twice with different values in {ini} ([a] and [b])"),
        ("[wa7]\n" + SEED_INI + "KAFKA_TOPIC: again\n",
         "KAFKA_TOPIC: set twice in {ini} ([wa7], line 9): keep one"),
        (SEED_INI + "Kafka_Topic: wa7.matomo.visits\n",
         "KAFKA_TOPIC: set twice in {ini} (top of file, line 8): keep one"),
        ("[a]\nSTART_DATE: 2023-04-01\n[a]\n" + SEED_INI.replace("START_DATE", "#"),
         "{ini}: section [a] appears twice (line 3): merge them"),
        (SEED_INI.replace("KAFKA_TOPIC", "  KAFKA_TOPIC"),
         "KAFKA_TOPIC: indented under SALAGE in {ini} (top of file), so read as part of "
         "SALAGE's value: remove the indentation"),
        (SEED_INI.replace("KAFKA_TOPIC: wa7.matomo.visits", "KAFKA_TOPIC:"),
         "KAFKA_TOPIC: is required but empty (from {ini})"),
        (SEED_INI.replace("KAFKA_TOPIC: wa7.matomo.visits", "KAFKA_TOPIC: wa7.visits # prod"),
         "KAFKA_TOPIC: is not a valid Kafka topic name (letters, digits, . _ - only) (from "
         "{ini}; inline comments are not supported there: ' #' and what follows are part of "
         "the value)"),
        (SEED_INI + "KAFKA_TOPIC wa7.matomo.visits\n",
         "{ini}: line 8 is not `KEY: value`, `KEY = value`, a [section] or a comment"),
    ],
    ids=["DEFAULT and a section", "top of file and a section", "three places",
         "secret in two sections", "twice in a section", "two spellings in a section",
         "section twice", "indented key", "empty required value", "inline comment",
         "no separator"],
)  # fmt: skip
def test_ini_mistakes_give_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    parm = write(tmp_path, text)
    assert problems(parm) == [expected.format(ini=ini_path(parm))]


def test_set_twice_is_listed_with_the_other_problems(tmp_path: Path) -> None:
    """Every problem at once; the ambiguous key is not also said to be missing."""
    text = "[DEFAULT]\n" + SEED_INI.replace("2023-04-01", "2023-02-30")
    parm = write(tmp_path, text + "[prod]\nKAFKA_TOPIC: prod.visits\n")
    ini = ini_path(parm)
    assert problems(parm) == [
        f"KAFKA_TOPIC: set twice with different values in {ini} ([DEFAULT] and [prod])",
        f"START_DATE: Input should be a valid date or datetime, day value is outside "
        f"expected range (from {ini})",
    ]


def test_set_twice_values_are_never_shown(tmp_path: Path) -> None:
    parm = write(tmp_path, "[a]\nSALAGE: first-salt-xyz\n[b]\nSALAGE: second-salt-xyz\n")
    text = "\n".join(problems(parm))
    assert "salt-xyz" not in text and "SALAGE: set twice" in text


def test_inline_comment_in_a_number_hints_at_it(tmp_path: Path) -> None:
    parm = write(
        tmp_path, SEED_INI.replace("MATOMO_FILTER_LIMIT : 1000", "MATOMO_FILTER_LIMIT: 1000 ; max")
    )
    (problem,) = problems(parm)
    assert problem.startswith("MATOMO_FILTER_LIMIT: Input should be a valid integer")
    assert problem.endswith(
        f"(from {ini_path(parm)}; inline comments are not supported there: ' ;' and what "
        "follows are part of the value)"
    )  # fmt: skip


def test_env_file_names_in_two_spellings(tmp_path: Path) -> None:
    parm = write(tmp_path, SEED_INI, SEED_ENV + 'clusterid="PR01"\n')
    assert problems(parm) == [
        f"CLUSTERID: set twice with different values in {parm / 'wa7.env'} (CLUSTERID and "
        "clusterid)"
    ]


def test_not_utf8(tmp_path: Path) -> None:
    parm = write(tmp_path, SEED_INI.replace("wa7.matomo", "wa7.matomo-\xe9").encode("latin-1"))
    assert problems(parm) == [f"{ini_path(parm)}: cannot be read (UnicodeDecodeError)"]


def test_inline_comment_in_a_valid_value_is_warned_about(tmp_path: Path) -> None:
    """`visitorId # ids` would be a column of its own: visitorId not pseudonymised."""
    parm = write(tmp_path, seed_ini_with(COLONNE_ANNOMYSE="visitIp,visitorId # ids"))
    loaded = load_config(parm, environ={})
    assert loaded.settings.COLONNE_ANNOMYSE == ("visitIp", "visitorId # ids")
    assert loaded.warnings == [
        f"COLONNE_ANNOMYSE: its value in {ini_path(parm)} contains ' #': inline comments "
        "are not supported there, so that text is part of the value"
    ]


SHORT_SALT = (
    "SALAGE: shorter than 16 bytes: pseudonyms of values with few possibilities (IPv4 "
    "addresses, numeric ids) can be brute-forced with a short key; a longer salt is safer "
    "but changes every pseudonym (this one is kept)"
)


@pytest.mark.parametrize(
    ("salt", "warnings"),
    [
        ("s", [SHORT_SALT]),
        ("15-bytes-salt!!", [SHORT_SALT]),
        ("16-bytes-salt!!!", []),
        ("\xe9" * 7 + "a", [SHORT_SALT]),  # 8 characters, 15 bytes
        ("\xe9" * 8, []),  # 8 characters, 16 bytes
    ],
)
def test_short_salt_is_warned_about(tmp_path: Path, salt: str, warnings: list[str]) -> None:
    loaded = load_config(write(tmp_path, seed_ini_with(SALAGE=salt)), environ={})
    assert loaded.settings.SALAGE is not None
    assert loaded.settings.SALAGE.get_secret_value() == salt
    assert loaded.warnings == warnings


def test_short_salt_without_columns_is_not_used_so_not_warned_about(tmp_path: Path) -> None:
    parm = write(tmp_path, seed_ini_with(SALAGE="s", COLONNE_ANNOMYSE=""))
    assert load_config(parm, environ={}).warnings == []
