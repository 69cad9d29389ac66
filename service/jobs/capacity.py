"""What a job takes on a worker, and whether a worker of its queue can give it: the data in
host memory; each model's training state in each GPU's memory when it trains on GPUs, else
in host memory; the GPUs it asks for; for a job across nodes, a worker per node. Sized
against the live workers of the job's queue (service/jobs/fleet.py), largest first, or the
configured cap (DISTILLERY_WORKER_MEMORY_BYTES) when none is live. A refusal names the limit,
the need, what is there and whose it is."""

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from service.config import get_settings
from service.errors import FieldError
from service.ingest.weights import param_count
from service.jobs import fleet
from service.spec.job import DataShape, DataSpec, JobSpec
from service.spec.methods import TeacherFacts
from service.spec.names import fixed_input_size

FLOAT32_BYTES = 4
# per trained parameter, float32: weights, gradients and SGD's momentum or AdamW's two moments
TRAINED_BYTES = {"sgd": 3 * FLOAT32_BYTES, "adamw": 4 * FLOAT32_BYTES}


@dataclass(frozen=True)
class Holder:
    """What a job may take on one worker: a live one's registration, or (gpu_memory None,
    GPUs unknown) the configured cap when its queue has none."""

    who: str  # how a refusal names it
    memory_bytes: int
    gpu_memory: list[int] | None = None  # bytes, per GPU, largest first


def holders(s: Session, queue: str) -> list[Holder]:
    """The live workers of `queue`, largest first; none: []."""
    rows = [
        Holder(f"worker {w.name}", w.memory_bytes, sorted(w.gpu_memory_bytes, reverse=True))
        for w in fleet.live(s, queue)
    ]
    return sorted(rows, key=lambda h: (len(h.gpu_memory or []), h.memory_bytes), reverse=True)


def configured(spec: JobSpec) -> Holder:
    queue = spec.resources.queue
    who = f"DISTILLERY_WORKER_MEMORY_BYTES (no live worker of queue {queue!r})"
    return Holder(who, get_settings().worker_memory_bytes)


def memory_problems(
    spec: JobSpec, shape: DataShape, teacher: TeacherFacts | None, where: Sequence[Holder]
) -> list[FieldError]:
    """What no holder in `where` could take: none when one can, else the problems of the
    one that comes closest (the largest, on a tie)."""
    found = [holder_problems(spec, shape, teacher, h) for h in where]
    return min(found, key=len)


def node_problems(
    spec: JobSpec, shape: DataShape, teacher: TeacherFacts | None, where: Sequence[Holder]
) -> list[FieldError]:
    """A job across nodes needs as many live workers of its queue, each able to hold its
    share (service/jobs/gangs.py claims one per node)."""
    nodes, queue = spec.resources.nodes, spec.resources.queue
    if nodes == 1:
        return []
    able = [h for h in where if not holder_problems(spec, shape, teacher, h)]
    if len(able) >= nodes:
        return []
    which = f": {', '.join(h.who for h in able)}" if able else ""
    why = f"needs {nodes} live workers of queue {queue!r} able to run the job, it has {len(able)}"
    return [FieldError("resources.nodes", f"{why}{which}")]


def holder_problems(
    spec: JobSpec, shape: DataShape, teacher: TeacherFacts | None, h: Holder
) -> list[FieldError]:
    """Whether one holder takes the job: its data in host memory; its models' training
    state in each GPU's memory when it trains on GPUs, else in host memory."""
    errors = [
        FieldError(field, f"{why}; {_short('host memory', need, h.memory_bytes, h)}")
        for field, why, need in _data(spec.data, h.memory_bytes)
    ]
    gpus = spec.resources.gpus
    on_gpus = spec.train.device == "cuda" or (spec.train.device == "auto" and bool(h.gpu_memory))
    if on_gpus and h.gpu_memory is not None and len(h.gpu_memory) < gpus:
        why = f"GPUs: needs {gpus}, {h.who} has {len(h.gpu_memory)}"
        return [*errors, FieldError("resources.gpus", why)]
    parts = training_state(spec, shape, teacher)
    if on_gpus and h.gpu_memory:  # each of the job's processes holds the models on its GPU
        parts["train.batch_size"] //= spec.resources.processes  # its share of each batch
        kind, limit = "GPU memory", h.gpu_memory[gpus - 1]
    else:
        kind, limit = "host memory", h.memory_bytes
    if (need := sum(parts.values())) > limit:
        field = max(parts, key=lambda k: parts[k])
        why = f"training needs at least {_gib(need)} GiB ({_itemised(parts)})"
        errors.append(FieldError(field, f"{why}; {_short(kind, need, limit, h)}"))
    return errors


def _data(data: DataSpec, limit: int) -> list[tuple[str, str, int]]:
    """A synthetic set is made whole, as float32; the built-in sets are small, and an upload
    too large to hold (DISTILLERY_RESIDENT_BYTES) is streamed from its shards."""
    if data.dataset != "synthetic":
        return []
    opts = data.synthetic_options()
    need = opts.num_samples * opts.channels * opts.size**2 * FLOAT32_BYTES
    return [("data.synthetic", f"{_gib(need)} GiB of float32 images", need)] if need > limit else []


def training_state(spec: JobSpec, shape: DataShape, teacher: TeacherFacts | None) -> dict[str, int]:
    """Bytes by the field that sets them, a lower bound: float32 weights, gradients and
    optimizer state of each trained model (KDCL's peers too), a frozen teacher's weights,
    one input batch. Activations come on top, and are not counted."""
    per_param = TRAINED_BYTES[spec.train.optimizer.name]
    size = (shape.num_classes, shape.channels)
    parts = {"student.arch": per_param * param_count(spec.student.arch, *size)}
    for i, peer in enumerate(spec.method.peer_archs()):
        parts[f"method.peers.{i}"] = per_param * param_count(peer, *size)
    if teacher is not None:
        teacher_size = (teacher.num_classes, teacher.in_channels)
        parts[teacher.field] = FLOAT32_BYTES * param_count(teacher.arch, *teacher_size)
    batch = spec.train.batch_size * shape.channels * shape.size**2 * FLOAT32_BYTES
    parts["train.batch_size"] = batch
    return parts


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}"


def _short(kind: str, need: int, limit: int, h: Holder) -> str:
    """Which limit, by how much, on which worker."""
    return (
        f"{kind}: needs {_gib(need)} GiB, {h.who} has {_gib(limit)} GiB "
        f"({_gib(need - limit)} GiB short)"
    )


def _itemised(parts: dict[str, int]) -> str:
    return ", ".join(f"{field} {_gib(n)} GiB" for field, n in parts.items())


def input_size_problems(
    spec: JobSpec, shape: DataShape, teacher: TeacherFacts | None
) -> list[FieldError]:
    """The timm models among the job's that take only one input size, on data of another."""
    archs = {"student.arch": spec.student.arch}
    archs |= {f"method.peers.{i}": arch for i, arch in enumerate(spec.method.peer_archs())}
    if teacher is not None:
        archs[teacher.field] = teacher.arch
    errors = []
    for field, arch in archs.items():
        if (size := fixed_input_size(arch)) not in (None, shape.size):
            why = f"{arch} takes only {size}x{size} inputs, this data is {shape.size}x{shape.size}"
            errors.append(FieldError(field, f"{why} (data.image_size: {size} resizes it)"))
    return errors
