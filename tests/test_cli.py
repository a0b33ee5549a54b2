from typer.testing import CliRunner

from nmt_bert import __version__
from nmt_bert.cli import app

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("prepare", "train", "translate", "score"):
        assert command in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_bad_override_is_one_line_error_without_traceback(tmp_path):
    result = runner.invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                                 "--set", "train.nope=1"])
    assert result.exit_code == 1
    assert "unknown key 'train.nope'" in result.output
    assert "Traceback" not in result.output
