"""URL passwords hidden in every form (hydra_plugins/contrastive_sweeper/masking.py): the forms issue 30 found
leaking, then property tests over generated URLs embedded in the texts that carry them (YAML, logs, JSON)."""

from __future__ import annotations

import random
import string
from urllib.parse import quote, urlsplit

import pytest
from sqlalchemy.engine import make_url

from hydra_plugins.contrastive_sweeper.masking import hide_passwords
from hydra_plugins.contrastive_sweeper.trial import hide_passwords as reexported

SEEN = [  # issue 30's leaks, and the form that always held
    ("postgresql://:SECRET@127.0.0.1:5432/optuna", "postgresql://:***@127.0.0.1:5432/optuna"),
    ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
    ("postgresql://user:p@ss@db/optuna", "postgresql://user:***@db/optuna"),
    ("postgresql://u:it's@db/optuna", "postgresql://u:***@db/optuna"),
    ("postgresql://u:my pass@db/optuna", "postgresql://u:***@db/optuna"),
    ("postgresql://u:a/b?c#d@db/optuna", "postgresql://u:***@db/optuna"),  # unencoded: urlsplit misses it
    (
        "postgresql://db/optuna?user=u&password=SECRET&sslmode=require",
        "postgresql://db/optuna?user=u&password=***&sslmode=require",
    ),
    ("mysql+pymysql://db/x?PASSWORD=SECRET", "mysql+pymysql://db/x?PASSWORD=***"),
    ("postgresql+psycopg://sweeper:s3cr%40t@db:5432/optuna?x=1", "postgresql+psycopg://sweeper:***@db:5432/optuna?x=1"),
    ("storage: postgresql://:SECRET@h/o", "storage: postgresql://:***@h/o"),
    ("url:postgresql://u:SECRET@h/o", "url:postgresql://u:***@h/o"),
    ("postgresql://u:a://b@h/o", "postgresql://u:***@h/o"),  # a password holding `scheme://`
    ("- ++optuna.storage='postgresql://:SECRET@h:5/o'", "- ++optuna.storage='postgresql://:***@h:5/o'"),
]
KEPT = [  # nothing to hide: unchanged
    "sqlite:////tmp/a.db http://host:5000/x",
    "postgresql://user@db/optuna",
    "http://127.0.0.1:9",
    "see https://example.com/a?b=c for mail@example.com",  # `@` but no `user:` before it
    "plain text: with a colon @ and at",
]


@pytest.mark.parametrize(("text", "hidden"), SEEN, ids=[s[0][:40] for s in SEEN])
def test_every_form_seen_leaking_is_hidden(text, hidden):
    assert hide_passwords(text) == hidden
    assert reexported(text) == hidden  # the sweeper's callers import it from trial.py
    assert hide_passwords(hidden) == hidden  # idempotent


@pytest.mark.parametrize("text", KEPT)
def test_text_without_a_password_is_unchanged(text):
    assert hide_passwords(text) == text


PASSWORD_CHARS = string.ascii_letters + string.digits + "@:/?#'\" %!$&*+,;=[]~-_.^()"
FRAGMENTS = ["://", "@h:", "x:y@", "' ", '"']  # pieces that look like URL syntax inside a password
SCHEMES = ["postgresql", "postgresql+psycopg", "mysql+pymysql", "redis", "http", "https", "sqlite", "mongodb+srv"]
CONTEXTS = [  # where a URL shows up: YAML values, override lists, log lines, JSON, a URL among others
    "{url}",
    "storage: {url}",
    "storage:{url}",
    "  - ++optuna.storage={url}",
    "study 'x' in {url}: 3 of 4 trials finished",
    '{{"storage": "{url}", "n": 1}}',
    "a http://mlflow:5000 b {url} c sqlite:///x.db",
]


def _password(rng: random.Random, encoded: bool) -> str:
    text = "".join(rng.choice(PASSWORD_CHARS) for _ in range(rng.randint(1, 16)))
    if rng.random() < 0.2:
        text += rng.choice(FRAGMENTS) + rng.choice(string.ascii_letters)
    text = "Z" + text  # never empty, never the mask itself
    return quote(text, safe="") if encoded else text


def _url(rng: random.Random) -> tuple[str, str, str]:
    """A generated URL with a password in its user info or its query; (url, password, host)."""
    password = _password(rng, encoded=rng.random() < 0.4)
    user = rng.choice(["", "u", "sweeper", "a.b-c_d"])
    host = rng.choice(["db", "127.0.0.1", "pg.example.com", "[::1]"]) + rng.choice(["", ":5432"])
    path = rng.choice(["", "/optuna", "/a/b"])
    scheme = rng.choice(SCHEMES)
    if rng.random() < 0.7:
        return f"{scheme}://{user}:{password}@{host}{path}", password, host
    key = rng.choice(["password", "PASSWORD", "pwd", "secret", "token"])
    clean = quote(password, safe="")  # a query value is a URL's encoded text
    extra = rng.choice(["", "&sslmode=require"])
    return f"{scheme}://{host}{path}?user={user or 'x'}&{key}={clean}{extra}", clean, host


@pytest.mark.parametrize("seed", range(8))
def test_generated_urls_never_show_their_password(seed):
    """800 generated URLs in 6 kinds of text: the password is gone, the host stays, the parsers agree."""
    rng = random.Random(seed)
    for _ in range(100):
        url, password, host = _url(rng)
        context = rng.choice(CONTEXTS)
        hidden = hide_passwords(context.format(url=url))
        assert password not in hidden, (url, hidden)
        assert host in hidden, (url, hidden)
        alone = hide_passwords(url)
        assert hide_passwords(alone) == alone
        parsed = urlsplit(alone)
        if "?" not in password and "#" not in password and "/" not in password and "?user=" not in url:
            assert parsed.password == "***", (url, alone)  # urllib reads the mask where the password was
            if "@" not in password and not host.startswith("["):
                assert make_url(alone).password == "***", (url, alone)  # and so does SQLAlchemy
