"""The cache protocol's contract suite, run on every server it can reach (as Optuna runs one storage test
suite on every storage).

The ``contract_server`` fixture is parametrised over the servers of this machine:

* ``secantus``: the embedded SecantusDB server, always (the session's server when it is SecantusDB, else
  one started here on 127.0.0.1);
* ``mongod``: a real MongoDB, when ``mongod`` is on PATH;
* ``uri``: the server of ``$WIREHEAD_TEST_MONGO_URI``, when it is set.

Every test of this folder gets the ``mongo_uri`` (and so ``make_config`` and ``config``) of each server in
turn, so ``pytest tests/contract -k mongod`` runs the suite on one of them.  A test that needs something a
server cannot give is marked ``@pytest.mark.server_feature("<feature>")`` and skipped on the servers
whose :data:`FEATURES` lack it, with the reason; a feature nobody declares fails the test instead of
skipping it silently.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import pytest

from wirehead import LocalMongo

#: What each kind of server offers beyond the protocol itself.
#: ``owned``: the suite started the server itself (its process can be stopped, paused or restarted).
#: ``failpoints``: ``configureFailPoint failCommand`` (server errors on demand) and ``replSetStepDown`` (a
#: failover), on a server of that kind that :func:`failover_server` starts with its test commands on; a
#: ``mongod`` here runs standalone without them, and a server of ``$WIREHEAD_TEST_MONGO_URI`` is not ours to arm.
FEATURES: dict[str, set[str]] = {"secantus": {"owned", "failpoints"}, "mongod": {"owned"}, "uri": set()}


def _servers() -> list[str]:
    found = ["secantus"]
    if shutil.which("mongod"):
        found.append("mongod")
    if os.environ.get("WIREHEAD_TEST_MONGO_URI"):
        found.append("uri")
    return found


@dataclass
class ContractServer:
    """One server the suite runs on: its kind (a key of :data:`FEATURES`), URI and, when owned, process."""

    kind: str
    uri: str
    server: Optional[LocalMongo] = None

    def has(self, feature: str) -> bool:
        return feature in FEATURES[self.kind]


@pytest.fixture(scope="session", params=_servers())
def contract_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContractServer]:
    """Each reachable server in turn (see the module docstring); one started here is stopped at the end."""
    kind = request.param
    if kind == "uri":
        yield ContractServer(kind, os.environ["WIREHEAD_TEST_MONGO_URI"])
        return
    if not os.environ.get("WIREHEAD_TEST_MONGO_URI"):
        session = request.getfixturevalue("mongo_server")  # the session's own LocalMongo: reuse it when it fits
        if session is not None and session.engine == kind:
            yield ContractServer(kind, session.uri, session)
            return
    server = LocalMongo(tmp_path_factory.mktemp(f"contract-{kind}"), engine=kind)
    server.start()
    try:
        yield ContractServer(kind, server.uri, server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongo_uri(contract_server: ContractServer) -> str:
    """This folder's tests run on the contract server of the current parameter (overrides the session's)."""
    return contract_server.uri


@pytest.fixture(autouse=True)
def _server_features(request: pytest.FixtureRequest) -> None:
    """Skip a test on a server that lacks a feature it declares with ``server_feature`` (and say which)."""
    marks = list(request.node.iter_markers("server_feature"))
    if not marks:
        return
    server: ContractServer = request.getfixturevalue("contract_server")
    for mark in marks:
        for feature in mark.args:
            if not any(feature in f for f in FEATURES.values()):
                pytest.fail(f"server_feature({feature!r}) is not a feature of any server; known: "
                            f"{sorted(set().union(*FEATURES.values()))}")
            if not server.has(feature):
                pytest.skip(f"the {server.kind} server lacks {feature!r}")


class _TestCommandsSecantus(LocalMongo):
    """SecantusDB with its test commands on (``configureFailPoint``) and advertised as a one-node replica set
    (so ``replSetStepDown`` works and pymongo follows a failover as it does on a real replica set)."""

    def _command(self, exe: str, host: str = "127.0.0.1") -> list[str]:
        return [a for a in super()._command(exe, host) if a != "--standalone"] + ["--enable-test-commands"]


@pytest.fixture(scope="session")
def failover_server(contract_server: ContractServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A server whose failpoints and step-down the tests may use (started here, stopped at the end), or
    ``None`` where the contract server's kind has no such server (tests using it are skipped)."""
    if not contract_server.has("failpoints"):
        yield None
        return
    server = _TestCommandsSecantus(tmp_path_factory.mktemp("failover"), engine="secantus")
    server.start()
    try:
        yield server
    finally:
        server.stop()
