"""Settings from the environment, and `labelwheel serve` start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from labelwheel.ml_backend.config import VARIABLES, ConfigError, Settings, variables_help


def test_defaults_are_valid(tmp_path: Path) -> None:
    s = Settings.from_env({"MODEL_DIR": str(tmp_path)})
    assert s.strategy == "adaptive"
    assert s.retrain_every == 10
    assert s.backbone == "efficientnet-lite0"
    assert s.image_size == 224
    assert s.publish is True
    assert s.auth_enabled is False
    assert s.allowed_hosts == frozenset()
    assert s.label_studio_url is None


def test_values_are_parsed(tmp_path: Path) -> None:
    env = {
        "MODEL_DIR": str(tmp_path),
        "LABEL_STUDIO_URL": "http://127.0.0.1:8080/",
        "LABELWHEEL_ALLOWED_HOSTS": "Example.org, images.example.com",
        "LABELWHEEL_RETRAIN_EVERY": "0",
        "LABELWHEEL_PUBLISH": "no",
        "LABELWHEEL_LOCAL_FILES_ROOT": str(tmp_path),
        "BASIC_AUTH_USER": "u",
        "BASIC_AUTH_PASS": "p",
        "LABELWHEEL_STRATEGY": "margin",
    }
    s = Settings.from_env(env)
    assert s.label_studio_url == "http://127.0.0.1:8080"
    assert s.allowed_hosts == {"example.org", "images.example.com"}
    assert s.retrain_every == 0 and s.publish is False
    assert s.local_files_root == tmp_path.resolve()
    assert s.auth_enabled and s.strategy == "margin"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("LABELWHEEL_STRATEGY", "best-guess", "LABELWHEEL_STRATEGY must be one of"),
        ("LABELWHEEL_RETRAIN_EVERY", "-1", "LABELWHEEL_RETRAIN_EVERY must be an integer"),
        ("LABELWHEEL_IMAGE_SIZE", "big", "LABELWHEEL_IMAGE_SIZE must be an integer"),
        ("LABELWHEEL_IMAGE_SIZE", "8", "between 16 and 1024"),
        ("LABELWHEEL_FETCH_TIMEOUT", "soon", "LABELWHEEL_FETCH_TIMEOUT must be a number"),
        ("LABELWHEEL_PUBLISH", "maybe", "LABELWHEEL_PUBLISH must be true or false"),
        ("LABEL_STUDIO_URL", "localhost:8080", "LABEL_STUDIO_URL must be an http"),
        ("LABELWHEEL_LOG_LEVEL", "LOUD", "LABELWHEEL_LOG_LEVEL must be one of"),
        ("LABELWHEEL_LOCAL_FILES_ROOT", "/no/such/dir/here", "LABELWHEEL_LOCAL_FILES_ROOT"),
        ("LABELWHEEL_BACKBONE", "resnet", "LABELWHEEL_BACKBONE must be"),
        ("BASIC_AUTH_USER", "alone", "BASIC_AUTH_PASS must be set too"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        Settings.from_env({"MODEL_DIR": str(tmp_path), name: value})


def test_model_dir_must_not_be_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ConfigError, match="MODEL_DIR"):
        Settings.from_env({"MODEL_DIR": str(target)})


def test_help_lists_every_variable() -> None:
    text = variables_help()
    for var in VARIABLES:
        assert var.name in text


def test_serve_help_lists_every_variable() -> None:
    from labelwheel.ml_backend.cli import serve_command

    result = CliRunner().invoke(serve_command, ["--help"])
    assert result.exit_code == 0
    for var in VARIABLES:
        assert var.name in result.output
    assert "gunicorn" in result.output


def test_serve_refuses_a_bad_setting(tmp_path: Path) -> None:
    from labelwheel.ml_backend.cli import serve_command

    result = CliRunner().invoke(
        serve_command,
        ["--port", "9"],
        env={"MODEL_DIR": str(tmp_path), "LABELWHEEL_RETRAIN_EVERY": "often"},
    )
    assert result.exit_code == 2
    assert "LABELWHEEL_RETRAIN_EVERY" in result.output
    assert "Traceback" not in result.output


def test_proxies_come_from_the_environment(tmp_path: Path) -> None:
    env = {
        "MODEL_DIR": str(tmp_path),
        "https_proxy": "http://ops:pw@proxy.corp:3128",
        "NO_PROXY": "ls.internal",
    }
    settings = Settings.from_env(env)
    assert str(settings.proxies.by_scheme["https"]) == "http://proxy.corp:3128"
    assert settings.proxies.no_proxy == "ls.internal"
    assert not Settings.from_env({"MODEL_DIR": str(tmp_path)}).proxies
    with pytest.raises(ConfigError, match="HTTP_PROXY") as e:
        Settings.from_env({"MODEL_DIR": str(tmp_path), "HTTP_PROXY": "socks5://ops:pw@p:1080"})
    assert "pw@" not in str(e.value)


def test_serve_refuses_an_unusable_proxy(tmp_path: Path) -> None:
    from labelwheel.ml_backend.cli import serve_command

    result = CliRunner().invoke(
        serve_command,
        ["--port", "9"],
        env={"MODEL_DIR": str(tmp_path), "HTTPS_PROXY": "socks5://p:1080"},
    )
    assert result.exit_code == 2
    assert "HTTPS_PROXY" in result.output and "only http:// proxies" in result.output
    assert "Traceback" not in result.output


def test_an_unreadable_certificate_bundle_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate")
    with pytest.raises(ConfigError, match="REQUESTS_CA_BUNDLE"):
        Settings.from_env({"MODEL_DIR": str(tmp_path), "REQUESTS_CA_BUNDLE": str(bundle)})
    import certifi

    Settings.from_env({"MODEL_DIR": str(tmp_path), "REQUESTS_CA_BUNDLE": certifi.where()})
