"""The Dockerfiles in docker/ checked against the repo, without Docker: what they copy exists, the entry point is the
service's real module, the user is not root, bases are pinned, no compiler in the final stage, the exposed ports are
the settings' defaults, the extra installed is the service's, and TTS/ASR handle both VARIANT values.

Each check is also run on a deliberately broken copy, so none of them can pass by not looking."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from voice_asr.settings import AsrSettings
from voice_gateway.settings import GatewaySettings
from voice_profiles.settings import ProfilesSettings
from voice_tts.settings import TtsSettings

REPO = Path(__file__).resolve().parent.parent
COMPILERS = ("gcc", "g++", "build-essential", "clang", "cc1", "make")
VARIANTS = ("cpu", "cuda")


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    settings: type[BaseSettings]
    extra: str | None  # None: the core dependencies only
    variants: bool


SERVICES = [
    Service("gateway", "voice_gateway", GatewaySettings, None, False),
    Service("profiles", "voice_profiles", ProfilesSettings, "profiles", False),
    Service("tts", "voice_tts", TtsSettings, "tts", True),
    Service("asr", "voice_asr", AsrSettings, "asr", True),
]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)

    def arguments(self, keyword: str) -> list[str]:
        return [arguments for found, arguments in self.instructions if found == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]


def parse(text: str) -> Dockerfile:
    """Instructions per stage; backslash continuations joined, comments and parser directives dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    if pending:
        logical.append(pending)
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "FROM":
            words = [word for word in arguments.split() if not word.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            if keyword == "ARG":
                key, _, default = arguments.partition("=")
                global_args[key] = default
        else:
            stages[-1].instructions.append((keyword, arguments))
    return Dockerfile(global_args, stages)


def substitute(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda match: variables.get(match.group(1), match.group(0)), value)


def final_chain(dockerfile: Dockerfile, variables: dict[str, str]) -> list[Stage]:
    """The final stage and the stages it is built FROM, down to an external image."""
    by_name = {stage.name: stage for stage in dockerfile.stages if stage.name}
    chain = [dockerfile.stages[-1]]
    while (base := substitute(chain[-1].base, variables)) in by_name:
        chain.append(by_name[base])
    return chain


def ignored(path: str, patterns: list[str]) -> bool:
    parts = Path(path).parts
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    return any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes for pattern in patterns)


PACKAGE_FOLDERS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
    "find"
]["where"]


def check(text: str, service: Service, repo: Path = REPO) -> list[str]:
    """Every problem found in one Dockerfile's text, as sentences; empty when it is right."""
    problems: list[str] = []
    dockerfile = parse(text)
    if len(dockerfile.stages) < 2:
        return ["not a multi-stage build"]
    stage_names = {stage.name for stage in dockerfile.stages if stage.name}
    dockerignore = [
        line.strip()
        for line in (repo / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    variant_values = VARIANTS if service.variants else ("",)
    for variant in variant_values:
        variables = {**dockerfile.global_args, **({"VARIANT": variant} if variant else {})}
        for stage in dockerfile.stages:
            base = substitute(stage.base, variables)
            if base in stage_names:
                continue
            tag = base.partition(":")[2]
            if "@sha256:" not in base and (not tag or tag == "latest" or not re.search(r"\d+\.\d+", tag)):
                problems.append(f"FROM {base} is not pinned to a version or digest")
        chain = final_chain(dockerfile, variables)
        external = substitute(chain[-1].base, variables)
        expected_base = "nvidia/cuda:" if variant == "cuda" else "python:3.11."
        if not external.startswith(expected_base):
            problems.append(f"VARIANT={variant or '-'}: the final image is based on {external}")
        for stage in chain:
            for run in stage.arguments("RUN"):
                words = set(re.split(r"[\s;&|()]+", run))
                problems.extend(
                    f"the final stage installs a compiler: {name}" for name in COMPILERS if name in words
                )

    # `pip install .` finds the packages in pyproject's packages.find folders: one not copied is silently missing
    # from the image (the `voice` CLI without voice_client, say).
    copied = {
        shlex.split(arguments)[0].rstrip("/")
        for stage in dockerfile.stages
        for arguments in stage.arguments("COPY")
        if not arguments.startswith("--from")
    }
    for folder in PACKAGE_FOLDERS:
        if not any(folder == source or folder.startswith(source + "/") for source in copied):
            problems.append(f"{folder}/ holds packages the install needs and is not copied")

    for stage in dockerfile.stages:
        for keyword in ("COPY", "ADD"):
            for arguments in stage.arguments(keyword):
                copy_words = shlex.split(arguments)
                if any(word.startswith("--from") for word in copy_words):
                    continue
                for source in [word for word in copy_words if not word.startswith("--")][:-1]:
                    if not (repo / source).exists():
                        problems.append(f"{keyword} {source}: no such path in the repo")
                    elif ignored(source.rstrip("/"), dockerignore):
                        problems.append(f"{keyword} {source}: excluded by .dockerignore")

    final = dockerfile.stages[-1]
    users = final.arguments("USER")
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the final stage runs as root (no USER, or USER root/0)")
    entrypoints = final.arguments("ENTRYPOINT")
    command = shlex.split(entrypoints[-1].strip("[]").replace(",", " ")) if entrypoints else []
    if command[:2] != ["python", "-m"] or len(command) != 3:
        problems.append(f"the ENTRYPOINT is not `python -m <module>`: {command}")
    elif command[2] != service.module or importlib.util.find_spec(command[2]) is None:
        problems.append(f"the ENTRYPOINT module {command[2]} is not {service.module}")

    exposed = {
        int(port.split("/")[0]) for arguments in final.arguments("EXPOSE") for port in arguments.split()
    }
    # The gateway's OpenAI-compatible HTTP port too (http_port).
    port_fields = [
        name for name in ("port", "http_port", "metrics_port") if name in service.settings.model_fields
    ]
    defaults = {service.settings.model_fields[name].default for name in port_fields}
    if exposed != defaults:
        problems.append(f"EXPOSE {sorted(exposed)} is not the settings' ports {sorted(defaults)}")

    runs = " ".join(arguments for stage in dockerfile.stages for arguments in stage.arguments("RUN"))
    installs = re.findall(r"pip install '\.(?:\[([\w,-]+)\])?'", runs)
    project_extras = set(
        tomllib.loads((repo / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    wanted = service.extra or ""
    if installs != [wanted]:
        problems.append(f"the project is installed with extras {installs}, not [{wanted!r}]")
    for extras in installs:
        problems.extend(
            f"extra {extra} is not in pyproject.toml"
            for extra in extras.split(",")
            if extra and extra not in project_extras
        )

    if service.variants:
        if dockerfile.global_args.get("VARIANT") not in VARIANTS:
            problems.append("no ARG VARIANT defaulting to cpu or cuda before the first FROM")
        for variant in VARIANTS:
            if f"base-{variant}" not in stage_names:
                problems.append(f"no stage base-{variant} for VARIANT={variant}")
            if not re.search(rf"\b{variant}\b[|)]", runs):
                problems.append(f"the build does not handle VARIANT={variant}")
        if service.name == "tts":
            for index in ("download.pytorch.org/whl/cpu", "download.pytorch.org/whl/cu"):
                if index not in text:
                    problems.append(f"no torch from {index}")
    return problems


def dockerfile_text(service: Service) -> str:
    return (REPO / "docker" / f"{service.name}.Dockerfile").read_text()


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.name)
def test_dockerfile_matches_the_repo(service: Service) -> None:
    assert check(dockerfile_text(service), service) == []


# (service, replaced, replacement, words of the expected problem)
BREAKAGES = [
    ("gateway", "USER 10001:10001", "USER root", "runs as root"),
    ("profiles", "USER 10001:10001", "USER 0", "runs as root"),
    ("gateway", "USER 10001:10001\n", "", "runs as root"),
    ("gateway", '"voice_gateway"]', '"voice_profiles"]', "ENTRYPOINT module"),
    ("asr", '"voice_asr"]', '"voice_asr_missing"]', "ENTRYPOINT module"),
    ("gateway", 'ENTRYPOINT ["python", "-m", ', 'ENTRYPOINT ["voice-gateway", ', "not `python -m"),
    ("profiles", "COPY cli/ cli/", "COPY clients/ clients/", "no such path"),
    ("gateway", "COPY client/ client/\n", "", "client/ holds packages"),
    ("asr", "COPY protos/ protos/", "COPY tools/ tools/", "excluded by .dockerignore"),
    ("gateway", "FROM python:3.11.14-slim-bookworm\n", "FROM python:latest\n", "not pinned"),
    ("tts", "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04", "nvidia/cuda", "not pinned"),
    ("profiles", "RUN groupadd", "RUN apt-get install -y gcc && groupadd", "compiler: gcc"),
    (
        "asr",
        "apt-get install -y --no-install-recommends python3.11 ",
        "apt-get install -y build-essential python3.11 ",
        "compiler: build-essential",
    ),
    ("tts", "EXPOSE 50053 9153", "EXPOSE 50053 9152", "not the settings' ports"),
    ("gateway", "EXPOSE 50051 8080 9151", "EXPOSE 50051 9151", "not the settings' ports"),
    ("profiles", "'.[profiles]'", "'.[tts]'", "extras"),
    ("gateway", "pip install '.'", "pip install '.[nosuch]'", "not in pyproject.toml"),
    ("asr", "ARG VARIANT=cpu", "ARG VARIANT=gpu", "no ARG VARIANT"),
    ("tts", "cuda) torch_index", "gpu) torch_index", "does not handle VARIANT=cuda"),
    ("asr", "AS base-cuda", "AS base-gpu", "final image is based on"),
    ("tts", "download.pytorch.org/whl/cpu", "pypi.org/simple", "no torch from"),
]


@pytest.mark.parametrize(("name", "replaced", "replacement", "expected"), BREAKAGES)
def test_a_broken_copy_is_reported(name: str, replaced: str, replacement: str, expected: str) -> None:
    service = next(service for service in SERVICES if service.name == name)
    text = dockerfile_text(service)
    assert replaced in text, "the breakage no longer applies to the Dockerfile: update it"
    problems = check(text.replace(replaced, replacement, 1), service)
    assert any(expected in problem for problem in problems), problems


def test_a_single_stage_build_is_reported() -> None:
    single = 'FROM python:3.11.14-slim-bookworm\nUSER 10001\nENTRYPOINT ["python", "-m", "voice_gateway"]\n'
    assert check(single, SERVICES[0]) == ["not a multi-stage build"]


def test_the_parser_joins_continuations_and_splits_stages() -> None:
    parsed = parse("# c\nARG V=cpu\nFROM a:1.0 AS one\nRUN echo a \\\n    && echo b\nFROM one\nUSER 1\n")
    assert parsed.global_args == {"V": "cpu"}
    assert [(stage.base, stage.name) for stage in parsed.stages] == [("a:1.0", "one"), ("one", None)]
    assert parsed.stages[0].instructions == [("RUN", "echo a && echo b")]
