"""No mistake in parm/ silently turns pseudonymisation off (issue 27): a corpus of near-miss
keys, separators, case typos, placeholder salts and turned-off TLS checks, each refused at
start (exit 2, nothing sent) or named in a warning, never ignored."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from matomo_kafka.config.load import load_config
from matomo_kafka.config.review import PLACEHOLDER_SALTS
from matomo_kafka.errors import ConfigError
from support.parm import SEED_ENV, SEED_INI

REPO = Path(__file__).resolve().parents[2]
GOOD_SALT = "a7Qe-private-salt-9kd2"


def write(directory: Path, ini: str, env: str = SEED_ENV) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "wa7_conf.ini").write_text(ini, encoding="utf-8")
    (directory / "wa7.env").write_text(env, encoding="utf-8")
    return directory


def ini_with(**values: str) -> str:
    """The seed's ini with keys replaced (a value of None-like "" keeps the key empty)."""
    lines = []
    for line in SEED_INI.splitlines():
        key = line.split(":", 1)[0].strip()
        lines.append(f"{key}: {values.pop(key)}" if key in values else line)
    lines += [f"{key}: {value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def problems(parm: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(parm, environ=environ or {})
    return caught.value.problems


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("COLONNE_ANONYMISE", "COLONNE_ANNOMYSE"),  # the correct French spelling
        ("COLONNE_ANONYMIZE", "COLONNE_ANNOMYSE"),
        ("COLONNES_ANNOMYSE", "COLONNE_ANNOMYSE"),
        ("COLONNE_ANNOMYSEE", "COLONNE_ANNOMYSE"),
        ("COLUMNS_TO_ANONYMISE", "COLONNE_ANNOMYSE"),
        ("COLONNE_PSEUDONYMISE", "COLONNE_ANNOMYSE"),
        ("SALAGES", "SALAGE"),
        ("SALT", "SALAGE"),
        ("SALAGE_KEY", "SALAGE"),
    ],
)
def test_a_misspelt_privacy_key_refuses_to_start(tmp_path: Path, name: str, meant: str) -> None:
    """In the ini (names any case) and in wa7.env alike: the line names the key as written
    and the key it resembles, never the value."""
    ini = SEED_INI.replace(f"{meant}:", f"{name}:")
    found = problems(write(tmp_path / "ini", ini))
    assert any(line.startswith(f"{meant}: ") and name in line for line in found), found
    assert all("visitIp" not in line and "s3l%" not in line for line in found), found

    env_ini = "\n".join(line for line in SEED_INI.splitlines() if not line.startswith(meant))
    env = SEED_ENV + f'{name}="visitIp,visitorId"\n'
    found = problems(write(tmp_path / "env", env_ini + "\n", env))
    assert any(line.startswith(f"{meant}: ") and name in line for line in found), found


def test_a_misspelt_privacy_key_in_the_environment_is_refused(tmp_path: Path) -> None:
    parm = write(tmp_path, SEED_INI)
    found = problems(parm, {"COLONNE_ANONYMISE": "visitIp", "PYTHONHASHSEED": "0"})
    assert found == [
        "COLONNE_ANNOMYSE: the environment sets COLONNE_ANONYMISE, which is not a key: did you "
        "mean COLONNE_ANNOMYSE? (ignoring it would leave personal columns in clear)"
    ]
    # Other programs' variables are not judged: only names this close to a privacy key.
    assert load_config(parm, environ={"PYTHONHASHSEED": "0", "SALT": "x", "HOME": "/"})


def test_every_other_unknown_key_is_named_with_the_key_it_resembles(tmp_path: Path) -> None:
    ini = SEED_INI + "KAFKA_TOPICS: other\n[extra]\nstart_dat: 2024-01-01\n"
    env = SEED_ENV + 'HTTPS_PROXY="http://proxy:3128"\n'
    loaded = load_config(write(tmp_path, ini, env), environ={})
    ini_path, env_path = tmp_path / "wa7_conf.ini", tmp_path / "wa7.env"
    keys_doc = "(the keys: parm.example/ and docs/configuration.md)"
    assert loaded.warnings == [
        f"KAFKA_TOPICS: unknown key in {ini_path}, ignored; did you mean KAFKA_TOPIC? {keys_doc}",
        f"START_DAT: unknown key in {ini_path}, ignored; did you mean START_DATE? {keys_doc}",
        f"HTTPS_PROXY: unknown key in {env_path}, ignored {keys_doc}",
    ]


def test_the_seed_files_load_without_a_word(tmp_path: Path) -> None:
    """Every key of the seed README (wa7_conf.ini and wa7.env) is a known key."""
    assert load_config(write(tmp_path, SEED_INI), environ={}).warnings == []


@pytest.mark.parametrize(
    ("value", "columns"),
    [
        ("visitIp,userId", ("visitIp", "userId")),
        ("visitIp, userId ,", ("visitIp", "userId")),
        ("\n  visitIp\n  userId", ("visitIp", "userId")),  # indented continuation lines
        ("visitIp,\n  userId,\n  actionDetails.url", ("visitIp", "userId", "actionDetails.url")),
        ("visitIp,visitIp", ("visitIp",)),
        ("Page Type", ("Page Type",)),  # a custom dimension's name may hold a space
    ],
)
def test_commas_and_continuation_lines_separate_columns(
    tmp_path: Path, value: str, columns: tuple[str, ...]
) -> None:
    loaded = load_config(write(tmp_path, ini_with(COLONNE_ANNOMYSE=value)), environ={})
    assert columns == loaded.settings.COLONNE_ANNOMYSE


def test_a_newline_in_wa7_env_separates_columns(tmp_path: Path) -> None:
    ini = "\n".join(line for line in SEED_INI.splitlines() if "COLONNE" not in line) + "\n"
    env = SEED_ENV + 'COLONNE_ANNOMYSE="visitIp\nuserId"\n'
    loaded = load_config(write(tmp_path, ini, env), environ={})
    assert loaded.settings.COLONNE_ANNOMYSE == ("visitIp", "userId")


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("visitIp;userId", "'visitIp;userId' holds ';'"),
        ("visitIp|userId", "'visitIp|userId' holds '|'"),
        ("visitIp\tuserId", "'visitIp\\tuserId' holds a tab"),
        ("actionDetails..url", "'actionDetails..url' is not a column path"),
        ("actionDetails.", "'actionDetails.' is not a column path"),
    ],
)
def test_other_separators_are_refused_in_one_line(tmp_path: Path, value: str, line: str) -> None:
    found = problems(write(tmp_path, ini_with(COLONNE_ANNOMYSE=value)))
    assert len(found) == 1 and found[0].startswith(f"COLONNE_ANNOMYSE: {line}"), found


@pytest.mark.parametrize(
    ("value", "meant"),
    [
        ("visitIP", "visitIp"),
        ("userID", "userId"),
        ("VisitorId", "visitorId"),
        ("actionDetails.URL", "actionDetails.url"),
        ("actionDetails.pagetitle", "actionDetails.pageTitle"),
    ],
)
def test_a_personal_field_in_the_wrong_case_is_refused(
    tmp_path: Path, value: str, meant: str
) -> None:
    found = problems(write(tmp_path, ini_with(COLONNE_ANNOMYSE=f"visitorId,{value}")))
    assert any(f"{value} is not a Matomo field: did you mean {meant}?" in p for p in found), found


@pytest.mark.parametrize("value", ["url", "pageTitle", "siteSearchKeyword", "ActionDetails.url"])
def test_an_action_field_listed_as_a_visit_field_is_refused(tmp_path: Path, value: str) -> None:
    found = problems(write(tmp_path, ini_with(COLONNE_ANNOMYSE=value)))
    assert len(found) == 1 and "actionDetails" in found[0], found


def test_a_field_whose_fact_another_field_carries_is_named(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, ini_with(COLONNE_ANNOMYSE="userId,country")), {})
    assert loaded.warnings == [
        "COLONNE_ANNOMYSE: userId is pseudonymised, but visitorId still carries the same "
        "information in clear: add them if they must not be read",
        "COLONNE_ANNOMYSE: country is pseudonymised, but countryCode, countryFlag still carry "
        "the same information in clear: add them if they must not be read",
    ]


def published_salts() -> set[str]:
    """Every SALAGE value the repository's README, docs and examples print."""
    found: set[str] = set()
    pattern = re.compile(r"SALAGE\s*[:=]\s*\"?([^\s\"`]+)|SALAGE `([^`]+)`")
    paths = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "parm.example").glob("*")]
    for path in paths:
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            value = match.group(1) or match.group(2)
            if value and not value.startswith(("...", "$", "<")):
                found.add(value)
    return found


def test_every_salt_the_docs_print_is_refused(tmp_path: Path) -> None:
    salts = published_salts()
    assert "my-salt" in salts, "the scan finds the docs' test vector"
    lines = set()
    for salt in salts | PLACEHOLDER_SALTS:
        found = problems(write(tmp_path, ini_with(SALAGE=salt)))
        assert len(found) == 1 and found[0].startswith("SALAGE: is a placeholder"), (salt, found)
        lines.add(found[0])
    assert len(lines) == 1, "the line never depends on (so never quotes) the salt"
    # Unused (nothing to pseudonymise), it harms no one: not refused.
    assert load_config(write(tmp_path, ini_with(SALAGE="xxxxx", COLONNE_ANNOMYSE="")), {})


def test_parm_example_puts_the_salt_in_wa7_env_and_ships_none(tmp_path: Path) -> None:
    example = REPO / "parm.example"
    ini = (example / "wa7_conf.ini").read_text(encoding="utf-8")
    assert not re.search(r"^SALAGE\s*[:=]", ini, re.MULTILINE), "SALAGE belongs in wa7.env"
    assert re.search(r'^SALAGE=""', (example / "wa7.env").read_text(), re.MULTILINE)


def transport(tmp_path: Path, env_extra: str, **ini: str) -> list[str]:
    parm = write(tmp_path, ini_with(SALAGE=GOOD_SALT, **ini), SEED_ENV + env_extra)
    return [line for line in load_config(parm, environ={}).warnings if "SALAGE" not in line]


def test_plain_http_to_matomo_is_warned_about_unless_loopback(tmp_path: Path) -> None:
    http = 'MATOMO_API_URL="http://matomo.example/index.php"\n'
    assert transport(tmp_path, http) == [
        "MATOMO_API_URL: plain http:// to matomo.example: the token_auth and the gateway "
        "password and every visit cross the network in clear; use https://"
    ]
    for local in ("http://127.0.0.1:8080/index.php", "http://localhost/", "http://[::1]:80/"):
        assert transport(tmp_path, f'MATOMO_API_URL="{local}"\n') == [], local


def test_kafka_certificate_checks_turned_off_are_warned_about(tmp_path: Path) -> None:
    env = (
        'KAFKA_PRODUCER_ENABLE_SSL_CERTIFICATE_VERIFICATION="false"\n'
        'KAFKA_PRODUCER_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM="none"\n'
    )
    warnings = transport(tmp_path, env)
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("KAFKA_PRODUCER_ENABLE_SSL_CERTIFICATE_VERIFICATION: Kafka")
    assert warnings[1].startswith("KAFKA_PRODUCER_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM: the")
    assert transport(tmp_path, 'KAFKA_PRODUCER_ENABLE_SSL_CERTIFICATE_VERIFICATION="true"\n') == []


def test_sasl_plain_over_plaintext_is_warned_about(tmp_path: Path) -> None:
    env = 'KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT"\nKAFKA_SASL_MECHANISM="PLAIN"\n'
    assert transport(tmp_path, env) == [
        "KAFKA_SECURITY_PROTOCOL: SASL_PLAINTEXT to broker1:9093: every visit crosses the "
        "network unencrypted; use SSL or SASL_SSL",
        "KAFKA_SASL_MECHANISM: PLAIN over SASL_PLAINTEXT sends KAFKA_PASSWORD in clear at "
        "every connection; use SASL_SSL (or SCRAM)",
    ]
    local = 'KAFKA_SERVERS="127.0.0.1:9092,localhost:9093"\n'
    assert transport(tmp_path, 'KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT"\n' + local) == []
    assert transport(tmp_path, 'KAFKA_SECURITY_PROTOCOL="SASL_SSL"\n') == []


@pytest.mark.parametrize("name", ["SAML", "SALES", "KAFKA_TOPICS"])
def test_a_name_merely_near_a_privacy_key_is_warned_about_not_refused(
    tmp_path: Path, name: str
) -> None:
    loaded = load_config(write(tmp_path, SEED_INI + f"{name}: x\n"), environ={})
    assert len(loaded.warnings) == 1 and loaded.warnings[0].startswith(f"{name}: unknown key")


def test_a_list_continued_on_an_indented_wa7_env_line_is_refused(tmp_path: Path) -> None:
    """python-dotenv drops a line without `=`: the ini's continuation lines do not exist
    there, and visitorId would have been sent in clear. The line is named by number only
    (it may be part of a secret)."""
    ini = "\n".join(line for line in SEED_INI.splitlines() if "COLONNE" not in line) + "\n"
    env = SEED_ENV + "COLONNE_ANNOMYSE=visitIp,\n    visitorId\nq8Zk3vW1pLr5Op4mN2\n"
    found = problems(write(tmp_path, ini, env))
    path = tmp_path / "wa7.env"
    keys_tail = "is not KEY=value (wa7.env has no continuation lines"
    assert [line for line in found if keys_tail in line] == [
        f"{path}: line 11 {keys_tail}: keep a list on one line, or quote it across lines)",
        f"{path}: line 12 {keys_tail}: keep a list on one line, or quote it across lines)",
    ], found
    assert not any("q8Zk" in line or "visitorId" in line for line in found), found


@pytest.mark.parametrize(
    "value",
    ['"visitIp", "visitorId"', "visitIp/visitorId", '["visitIp"]', "actionDetails[].url",
     "actionDetails.*.url", "actionDetails . url", "visitIp\u200bvisitorId",
     "visitIp\uff0cvisitorId"],
)  # fmt: skip
def test_quotes_brackets_and_odd_separators_are_refused(tmp_path: Path, value: str) -> None:
    found = problems(write(tmp_path, ini_with(COLONNE_ANNOMYSE=value)))
    assert len(found) == 1 and found[0].startswith("COLONNE_ANNOMYSE: "), found


def test_a_key_value_line_under_the_list_is_never_echoed(tmp_path: Path) -> None:
    ini = ini_with(COLONNE_ANNOMYSE="visitIp,\n  ssl.key.password=Hunter2-secret")
    found = problems(write(tmp_path, ini))
    assert found and not any("Hunter2" in line for line in found), found


def test_a_list_emptied_or_shortened_by_a_higher_layer_is_said(tmp_path: Path) -> None:
    parm = write(tmp_path, SEED_INI)
    loaded = load_config(parm, environ={"COLONNE_ANNOMYSE": ""})
    assert loaded.settings.COLONNE_ANNOMYSE == ()
    assert loaded.warnings[0] == (
        f"COLONNE_ANNOMYSE: environment replaces the list of {parm / 'wa7_conf.ini'}, so "
        "visitIp, visitorId are no longer pseudonymised (the value there is empty: nothing is)"
    )
    shorter = load_config(parm, environ={"COLONNE_ANNOMYSE": "visitIp"})
    assert shorter.warnings[0].endswith("so visitorId is no longer pseudonymised")
    same = load_config(parm, environ={"COLONNE_ANNOMYSE": "visitIp,visitorId,userId"})
    assert not any("replaces" in line for line in same.warnings)


@pytest.mark.parametrize(
    "salt", ['"change-me-demo-salt"', "<change-me>", "CHANGE_ME", "xxxxxxxxxxxxxxxxxxxx"]
)
def test_a_placeholder_salt_in_quotes_or_another_case_is_refused(tmp_path: Path, salt: str) -> None:
    found = problems(write(tmp_path, ini_with(SALAGE=salt)))
    assert any(line.startswith("SALAGE: is a placeholder") for line in found), found


def test_an_unknown_name_that_looks_like_a_secret_is_not_printed(tmp_path: Path) -> None:
    """A base64 secret wrapped onto a line of its own reads as a key name."""
    env = SEED_ENV + "Zm9vYmFyYmF6cXV4cXV1eA==\n"
    ini = SEED_INI + "zm9vymfyymf6cxv4cxv1ea: x\n"
    warnings = load_config(write(tmp_path, ini, env), environ={}).warnings
    assert not any("zm9v" in line.lower() for line in warnings), warnings
    assert sum("a name of 22 characters that is not a key" in line for line in warnings) == 2


@pytest.mark.parametrize("name", ["COLONNES_A_ANONYMISER", "ANONYMIZE_COLUMNS", "MY_SALAGE"])
def test_privacy_words_in_the_environment_are_refused(tmp_path: Path, name: str) -> None:
    found = problems(write(tmp_path, SEED_INI), {name: "visitIp"})
    assert len(found) == 1 and name in found[0], found


@pytest.mark.parametrize("name", ["SALE", "SAGE", "SALADE", "COLUMNS", "PYTHONHASHSEED"])
def test_other_programs_variables_are_not_refused(tmp_path: Path, name: str) -> None:
    assert load_config(write(tmp_path, SEED_INI), environ={name: "1"})
