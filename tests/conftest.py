"""Shared fixtures: a real Label Studio on a free loopback port.

Migrating a fresh Label Studio data dir takes ~45 s, so it happens once per test session
(``ls_template_dir``); every server then starts in seconds from a copy of that stopped data dir
(users and tokens included).

- ``label_studio``: one server for the whole session (create your own projects in it).
- ``fresh_label_studio``: a server of its own for one test (for tests that change organisation
  settings, e.g. turning legacy tokens off).
- ``ls_client``: a ``labelwheel.ls_api.LabelStudioClient`` for ``label_studio`` (legacy token).

Each server is started with local-file serving enabled under ``ls.local_files_root``.
The Label Studio executable comes from env ``LABELWHEEL_LS_BIN``, else
``.venv-ls/bin/label-studio``; if it is missing, tests that use these fixtures FAIL and say to
run ``make ls-venv``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labelwheel.ls_local import (
    LabelStudioNotInstalledError,
    LocalLabelStudio,
    copy_data_dir,
    find_ls_bin,
    free_port,
    prepare_data_dir,
    start_label_studio,
)


@dataclass(frozen=True)
class LSCredentials:
    """The admin user every test Label Studio is started with (generated per session)."""

    username: str
    password: str
    token: str


@pytest.fixture(scope="session")
def ls_credentials() -> LSCredentials:
    """Admin login and 40-hex legacy token for this test session."""
    return LSCredentials(
        username=f"admin-{secrets.token_hex(4)}@example.com",
        password=secrets.token_urlsafe(24),
        token=secrets.token_hex(20),
    )


@pytest.fixture(scope="session")
def ls_bin() -> str:
    """Path of the label-studio executable; fails (does not skip) when it is not installed."""
    try:
        return find_ls_bin()
    except LabelStudioNotInstalledError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def ls_template_dir(
    tmp_path_factory: pytest.TempPathFactory, ls_bin: str, ls_credentials: LSCredentials
) -> Path:
    """A migrated, stopped Label Studio data dir (made once per session, ~45 s)."""
    data_dir = tmp_path_factory.mktemp("ls-template") / "data"
    return prepare_data_dir(
        data_dir,
        username=ls_credentials.username,
        password=ls_credentials.password,
        token=ls_credentials.token,
        ls_bin=ls_bin,
    )


def _start_copy(template: Path, base: Path, ls_bin: str, creds: LSCredentials) -> LocalLabelStudio:
    data_dir = copy_data_dir(template, base / "data")
    files_root = base / "files"
    files_root.mkdir(parents=True, exist_ok=True)
    return start_label_studio(
        data_dir,
        free_port(),
        username=creds.username,
        password=creds.password,
        token=creds.token,
        ls_bin=ls_bin,
        local_files_root=files_root,
        timeout=120,
    )


@pytest.fixture(scope="session")
def label_studio(
    tmp_path_factory: pytest.TempPathFactory,
    ls_template_dir: Path,
    ls_bin: str,
    ls_credentials: LSCredentials,
) -> Iterator[LocalLabelStudio]:
    """A running Label Studio shared by the whole session."""
    ls = _start_copy(ls_template_dir, tmp_path_factory.mktemp("ls-session"), ls_bin, ls_credentials)
    try:
        yield ls
    finally:
        ls.stop()


@pytest.fixture
def fresh_label_studio(
    tmp_path: Path, ls_template_dir: Path, ls_bin: str, ls_credentials: LSCredentials
) -> Iterator[LocalLabelStudio]:
    """A running Label Studio of this test's own (~6 s to start)."""
    ls = _start_copy(ls_template_dir, tmp_path / "ls", ls_bin, ls_credentials)
    try:
        yield ls
    finally:
        ls.stop()


@pytest.fixture
def ls_client(label_studio: LocalLabelStudio) -> Any:
    """A LabelStudioClient for the session's Label Studio, with the legacy token."""
    from labelwheel.ls_api import LabelStudioClient

    return LabelStudioClient(label_studio.url, label_studio.token)


@pytest.fixture
def personal_access_token(label_studio: LocalLabelStudio) -> str:
    """A new personal access token of the session's admin. Label Studio keeps one per user (a
    second ``POST /api/token/`` is 409), so tokens earlier tests made are revoked first."""
    from labelwheel.ls_api import LabelStudioClient

    client = LabelStudioClient(label_studio.url, label_studio.token)
    for token in client.request("GET", "/api/token/").json():
        client.request("POST", "/api/token/blacklist/", json={"refresh": token["token"]})
    return client.create_personal_access_token()


@pytest.fixture(scope="module")
def local_ray() -> Iterator[object]:
    """A real local Ray (the machine's 2 cores, a small object store) for one test module."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        object_store_memory=200 * 2**20,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
