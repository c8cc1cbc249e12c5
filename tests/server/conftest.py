"""One real `kiln serve` (demo model) shared by every end-to-end test module in this folder.

Each server start loads the demo model, which costs seconds on the 2-core CI machine, so the
server is session-scoped; the shutdown tests start their own because they stop it.
"""

from __future__ import annotations

import pytest

from tests.server.harness import ServeProcess

API_KEY = "test-key-7f3a"
MAX_BODY_MB = 1
MAX_QUEUE = 400


@pytest.fixture(scope="session")
def served():
    """A running `kiln serve` with auth on; yields the process (`.url`)."""
    proc = ServeProcess(
        "--api-key",
        API_KEY,
        "--max-body-mb",
        str(MAX_BODY_MB),
        "--max-queue",
        str(MAX_QUEUE),
        "--max-model-len",
        "1024",
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def client(served):
    import openai

    return openai.OpenAI(base_url=served.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}
