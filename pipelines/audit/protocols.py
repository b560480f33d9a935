"""The audit's protocols: versioned choices of the networks and settings that make an audit's figures
(``offline-v1``, ``paper-v1``, ``toy-v1``), recorded in every report and never silently substituted
(docs/audit.md). A new protocol is one :func:`register_protocol` call; its ``identity`` names a registered judge
(:func:`guide_unlearn.pipelines.audit.register_judge`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from guide_unlearn.errors import BackendUnavailableError, ConfigError

from .registry import Registry


@dataclass(frozen=True)
class Protocol:
    """A versioned choice of networks and settings; recorded in every report.

    name:             "<name>-v<version>", e.g. "offline-v1" | "paper-v1" | "toy-v1".
    identity:         the registered judge that makes the identity figures ("dlib", "curricularface", "toy").
    feature_space:    the label of the Fréchet distance ("FD-dlib", "FD-toy", "FID-inception"); the figure is
                      always called by this label.
    views:            rendering views of the ID metric on camera models (the paper's evaluation: 11 yaws).
    samples:          default number of G_s / G_u samples for the Fréchet distance.
    required_weights: (family folder, file name, what) of every weight file the protocol needs.
    description:      one line for the report.
    identity_depth:   the depth an IR identity network must have (paper-v1: 101); None takes the depth its file
                      holds (short test backbones; the report names the depth that ran).
    """

    name: str
    identity: str
    feature_space: str
    views: int = 11
    samples: int = 500
    required_weights: tuple[tuple[str, str, str], ...] = ()
    description: str = ""
    identity_depth: Optional[int] = 101

    @property
    def version(self) -> int:
        """The number after "-v" in the name."""
        return int(self.name.rsplit("-v", 1)[1])


PROTOCOLS: Registry[Protocol] = Registry("audit protocol")


def register_protocol(protocol: Protocol, replace: bool = False) -> Protocol:
    """Make ``audit(protocol=protocol.name)`` use ``protocol`` (its name must end in "-v<N>"). -> protocol."""
    head, _, version = protocol.name.rpartition("-v")
    if not head or not version.isdigit():
        raise ConfigError(f"a protocol name is '<name>-v<version>' (e.g. 'offline-v2'), got {protocol.name!r}")
    return PROTOCOLS.register(protocol.name, protocol, replace=replace)


def get_protocol(name: Union[str, Protocol]) -> Protocol:
    """The protocol called ``name`` (a Protocol is returned as it is); ConfigError listing the known ones. A
    protocol whose weight files are missing (paper-v1) is refused (BackendUnavailableError naming each missing
    file and where to put it): nothing is ever substituted."""
    if isinstance(name, Protocol):
        return name
    proto = PROTOCOLS.lookup(name)
    if proto.required_weights:
        from guide_unlearn.faces.weights import candidate_paths

        missing = []
        for sub, fname, what in proto.required_weights:
            places = candidate_paths(sub, fname)
            if not any(p.is_file() for p in places):
                missing.append(f"{what}: {fname} (put it at {places[0]} or {places[-1]})")
        if missing:
            raise BackendUnavailableError(
                f"protocol {name} needs weight files that are not here: " + "; ".join(missing)
                + ". Nothing was substituted; use --protocol offline-v1 to audit with the offline networks")
    return proto


register_protocol(Protocol(
    "offline-v1", "dlib", "FD-dlib", samples=200,
    description="runs on any machine: dlib's face-recognition ResNet for identity (same person: Euclidean "
                "distance < 0.6 between raw descriptors), MTCNN to find faces, Fréchet distance between dlib "
                "descriptors of aligned chips (FD-dlib; not FID)"))
register_protocol(Protocol(
    "paper-v1", "curricularface", "FID-inception", samples=5000,
    required_weights=(("curricularface", "CurricularFace_Backbone.pth", "CurricularFace IR-101 (ID metric)"),
                      ("inception", "pt_inception-2015-12-05-6726825d.pth", "Inception-v3 FID network")),
    description="the paper's evaluation: CurricularFace IR-101 on MTCNN 112 crops, 11 views, "
                "Inception-v3 FID (5000 samples)"))
register_protocol(Protocol(
    "toy-v1", "toy", "FD-toy", samples=64,
    description="tests and tiny models only: a RANDOM toy identity network (not a face recogniser; its "
                "'same person' cut of cosine 0.9 is arbitrary); photos are taken as aligned crops"))
