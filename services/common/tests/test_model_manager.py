"""The generic model manager's switching rules: a LoadModel loads beside the serving model and replaces it only once
the new one works; a failure answers with what failed and leaves the serving model serving; requests keep the
model they began with; one load at a time."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from voice_common.errors import Aborted, FailedPrecondition, NotFound, Unavailable
from voice_common.model_download import DownloadProgress, HubUnreachable, ModelNotOnHub
from voice_common.model_manager import ModelManager, ModelProblem, ModelState


@dataclass(frozen=True)
class Spec:
    model: str


class Model:
    """A stand-in model: something a weak reference can watch being released."""

    def __init__(self, name: str) -> None:
        self.name = name


@dataclass
class Models:
    """A loader that fails for the names in ``broken``, a check that knows no "missing-*" name, and a record of
    what was loaded and released (by device, which names the model)."""

    broken: set[str] = field(default_factory=set)
    loaded: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    gate: threading.Event | None = None  # when set: loads wait for it
    entered: threading.Event = field(default_factory=threading.Event)

    def load(self, spec: Spec) -> tuple[Model, str, str]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if spec.model in self.broken:
            raise OSError(f"{spec.model}: weights damaged")
        self.loaded.append(spec.model)
        return Model(spec.model), f"device-of-{spec.model}", "float32"

    def check(self, spec: Spec) -> ModelProblem | None:
        if spec.model.startswith("missing-"):
            return ModelProblem(
                f"model directory {spec.model!r} does not exist: set MODEL", nothing_there=True
            )
        if spec.model.startswith("file-"):
            return ModelProblem(f"model {spec.model!r} is a file, not a model directory: set MODEL")
        return None

    def manager(self, first: str = "a", **options: object) -> ModelManager[Spec, Model]:
        return ModelManager(
            Spec(first),
            label="TEST",
            loader=self.load,
            check=self.check,
            release=self.released.append,
            **options,  # type: ignore[arg-type]
        )


async def _ready_on(manager: ModelManager[Spec, Model], name: str) -> None:
    status = manager.status()
    assert (status.state, status.model) == (ModelState.READY, name), status
    assert manager.readiness_problem() is None and manager.problem() is None
    async with manager.use() as model:
        assert model.name == name


async def test_a_failed_load_answers_what_failed_and_the_serving_model_serves_on() -> None:
    models = Models(broken={"damaged"})
    manager = models.manager("a")
    await manager.load()
    for name, error in (
        ("missing-b", NotFound),
        ("file-b", FailedPrecondition),
        ("damaged", FailedPrecondition),
    ):
        with pytest.raises(error) as info:
            await manager.load(Spec(name))
        assert name in info.value.message
        await _ready_on(manager, "a")
        message = manager.status().message
        assert message.startswith("a on device-of-a (float32); loading") and info.value.message in message
    assert isinstance(info.value, FailedPrecondition) and "weights damaged" in info.value.message
    assert models.loaded == ["a"] and models.released == []

    status = await manager.load(Spec("b"))  # one that works replaces it, and the note of the failure goes
    assert status.message == "b on device-of-b (float32)"
    await _ready_on(manager, "b")
    assert models.released == ["device-of-a"]


async def test_without_a_serving_model_a_failed_load_is_failed_and_says_so() -> None:
    manager = Models().manager("missing-a")
    with pytest.raises(NotFound) as info:
        await manager.load()
    status = manager.status()
    assert status.state is ModelState.FAILED and status.message == info.value.message
    assert manager.readiness_problem() == f"the TEST model is not available: {status.message}"
    with pytest.raises(Unavailable, match="does not exist"):
        async with manager.use():
            pass


async def test_a_switch_leaves_running_requests_on_the_old_model_until_the_last_ends() -> None:
    models = Models()
    manager = models.manager("a")
    async with manager.use() as first, manager.use() as second:
        old = weakref.ref(first)
        assert first is second
        await manager.load(Spec("b"))
        async with manager.use() as newer:
            assert newer.name == "b"  # later requests get the new model
        assert first.name == "a" and models.released == []
    # The last request on "a" ended: only now is it released.
    assert models.released == ["device-of-a"]
    del first, second
    gc.collect()
    assert old() is None
    await _ready_on(manager, "b")


async def test_unload_releases_the_model_once_its_requests_end() -> None:
    models = Models()
    manager = models.manager("a")
    async with manager.use():
        status = await manager.unload()
        assert status.state is ModelState.NOT_LOADED and models.released == []
    assert models.released == ["device-of-a"]
    async with manager.use() as model:  # the next request loads it again
        assert model.name == "a"


async def test_one_load_at_a_time_the_same_spec_shares_it_another_is_refused() -> None:
    models = Models(gate=threading.Event())
    manager = models.manager("a")
    first = asyncio.ensure_future(manager.load(Spec("b")))
    assert await asyncio.to_thread(models.entered.wait, 10)
    same = asyncio.ensure_future(manager.load(Spec("b")))
    with pytest.raises(Aborted) as info:
        await manager.load(Spec("c"))
    assert "'b' is loading" in info.value.message and "'c'" in info.value.message
    assert models.gate is not None
    models.gate.set()
    assert (await first).model == (await same).model == "b"
    assert models.loaded == ["b"]


async def test_beside_a_serving_model_a_load_and_its_download_keep_the_service_serving() -> None:
    progress_seen = threading.Event()
    finish = threading.Event()

    class Fetch:
        def needed(self, spec: Spec) -> bool:
            return spec.model == "hub/b"

        def __call__(self, spec: Spec, report: Callable[[DownloadProgress], None]) -> None:
            report(DownloadProgress("hub/b", "model.bin", 40, 100, 1, 2))
            progress_seen.set()
            assert finish.wait(10)

    models = Models()
    manager = models.manager("a", fetch=Fetch())
    await manager.load()
    loading = asyncio.ensure_future(manager.load(Spec("hub/b")))
    assert await asyncio.to_thread(progress_seen.wait, 10)
    status = manager.status()
    assert status.state is ModelState.READY and status.model == "a"
    assert status.message == "a on device-of-a (float32); downloading hub/b: 40% of 100 B to replace it"
    assert manager.readiness_problem() is None
    finish.set()
    await loading
    await _ready_on(manager, "hub/b")


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (HubUnreachable("hub/b", "the hub cannot be reached"), Unavailable),
        (ModelNotOnHub("hub/b", "no"), NotFound),
    ],
)
async def test_a_failed_download_answers_by_its_kind(failure: Exception, error: type[Exception]) -> None:
    class Fetch:
        def needed(self, spec: Spec) -> bool:
            return True

        def __call__(self, spec: Spec, report: Callable[[DownloadProgress], None]) -> None:
            raise failure

    manager = Models().manager("hub/b", fetch=Fetch())
    with pytest.raises(error):
        await manager.load()
    assert manager.state is ModelState.FAILED
