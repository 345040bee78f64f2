"""What the CLI prints and leaves behind: whole secrets masked (never the letters of our own
words), and no default store created by a reading command."""

from __future__ import annotations

import io
import json
from pathlib import Path

from regstore.cli.output import Output
from tests.support.cli import run_cli


def make(*secrets: str) -> tuple[Output, io.StringIO]:
    out = io.StringIO()
    output = Output(json_mode=True, stdout=out, stderr=io.StringIO())
    output.secrets.extend(secrets)
    return output, out


def test_a_one_letter_password_does_not_star_every_o() -> None:
    output, _ = make("o")
    line = "regstore: error: login to 127.0.0.1:5000 failed: wrong username or password"
    assert output.mask(line) == line


def test_a_secret_is_masked_as_a_whole_not_inside_longer_words() -> None:
    output, _ = make("s3cr3t-Key")
    assert (
        output.mask("key=s3cr3t-Key&x=1 and s3cr3t-Keyboard") == "key=***&x=1 and s3cr3t-Keyboard"
    )
    assert "s3cr3t-Key&" not in output.mask("https://u:s3cr3t-Key@host/")


def test_json_masks_secrets_with_quotes_and_non_ascii_letters_before_encoding() -> None:
    secret = 'pä"ss\\wörd'
    output, out = make(secret)
    output.json({"error": f"registry said: {secret} is wrong", "list": [secret]})
    text = out.getvalue()
    assert json.loads(text) == {"error": "registry said: *** is wrong", "list": ["***"]}
    assert json.dumps(secret)[1:-1] not in text and secret not in text


def test_reading_commands_do_not_create_the_default_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    for command in (["verify"], ["ls"], ["gc", "--dry-run"]):
        # no --store, no REGSTORE_STORE: the default store under HOME's data directory
        result = run_cli(*command, home=home)
        assert result.returncode == 1, (command, result)
        assert "no store at" in result.stderr, (command, result.stderr)
    assert list(home.rglob("*")) == [], "a reading command created files in the new HOME"
