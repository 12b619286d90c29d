"""ModelSpec: the one description of which model runs, shared by the executor, the cloud and launch.

    spec = ModelSpec.from_params(executor_params)      # the executor's parameter names
    model = spec.load()                                 # the CollaborativeModel both sides run
    cmd = ["dvfo-cloud", "--bind", endpoint] + spec.cloud_args()   # the cloud loads the same one

``artifact``: '' = the artifact trained for model + dataset if there is one (else untrained zoo
weights), 'none' = untrained zoo weights (same seed on both sides), anything else = that file.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional


@dataclass(frozen=True)
class ModelSpec:
    model: str = "resnet18"
    dataset: str = "digits"      # names the default artifact (digits, scenes or an ImageFolder name)
    artifact: str = ""           # '' = trained for model + dataset if any; 'none' = untrained; else a path
    split: int = -1              # stage index of the cut; -1 = the model's default (or the artifact's)
    num_classes: int = 1000      # of an untrained model (an artifact carries its own)
    input_size: int = 224        # input side in pixels of an untrained model
    seed: int = 0                # weight seed of an untrained model (edge and cloud must agree)

    # ---- where the weights come from -------------------------------------------------------
    def resolve_artifact(self) -> Optional[str]:
        """'' -> the artifact trained for model + dataset if there is one; 'none' -> None; else the path."""
        if self.artifact == "none":
            return None
        if self.artifact:
            return self.artifact
        from dvfo_ros.core.inference import collab
        return collab.default_artifact(self.model, self.dataset)

    def pinned(self) -> "ModelSpec":
        """The same spec with the artifact resolved on this machine ('' becomes a path or 'none')."""
        return dataclasses.replace(self, artifact=self.resolve_artifact() or "none")

    def load(self) -> Any:
        """The CollaborativeModel: the artifact (refused when it holds another model or cut), else
        the untrained zoo model. Every refusal is a one-line collab.ArtifactError."""
        from dvfo_ros.core.inference import collab
        path = self.resolve_artifact()
        split = None if self.split < 0 else self.split
        if path is None:
            return collab.CollaborativeModel.from_zoo(self.model, split, self.num_classes, self.input_size, self.seed)
        m = collab.CollaborativeModel.from_artifact(path)
        if m.meta["model"] != self.model:
            raise collab.ArtifactError(f"artifact {path} holds {m.meta['model']}, not {self.model}")
        if split is not None and int(m.meta["split"]) != split:
            raise collab.ArtifactError(f"artifact {path} is cut at split {m.meta['split']}, not {split}")
        return m

    # ---- the cloud's command line ------------------------------------------------------------
    def cloud_args(self) -> List[str]:
        """dvfo-cloud arguments that load exactly this model (the artifact pinned to a file here)."""
        s = self.pinned()
        return ["--model", s.model, "--dataset", s.dataset, "--artifact", s.artifact, "--split", str(s.split),
                "--num-classes", str(s.num_classes), "--input-size", str(s.input_size), "--seed", str(s.seed)]

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """--model --dataset --artifact --split --num-classes --input-size --seed (what from_args reads)."""
        from dvfo_ros.core.inference.models import ZOO
        d = ModelSpec()
        parser.add_argument("--model", default=d.model, choices=ZOO, help="zoo model (an artifact must hold it)")
        parser.add_argument("--dataset", default=d.dataset,
                            help="data set the default artifact was trained on (digits, scenes, an ImageFolder name)")
        parser.add_argument("--artifact", default=d.artifact,
                            help="trained artifact (.pt); '' = the one trained for --model + --dataset if any; "
                                 "'none' = untrained zoo weights")
        parser.add_argument("--split", type=int, default=d.split,
                            help="split index (-1: the model's default; an artifact must be cut there)")
        parser.add_argument("--num-classes", type=int, default=d.num_classes, help="classes of an untrained model")
        parser.add_argument("--input-size", type=int, default=d.input_size,
                            help="input side (px) of an untrained model")
        parser.add_argument("--seed", type=int, default=d.seed,
                            help="weight seed of an untrained model (must match the edge)")

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> "ModelSpec":
        return cls(model=ns.model, dataset=ns.dataset, artifact=ns.artifact, split=int(ns.split),
                   num_classes=int(ns.num_classes), input_size=int(ns.input_size), seed=int(ns.seed))

    # ---- the executor's parameters -------------------------------------------------------------
    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> "ModelSpec":
        """From the executor's parameters (model, dataset, artifact, split_index, num_classes,
        input_size); missing ones take the executor's defaults."""
        d = cls()
        return cls(model=str(p.get("model", d.model)), dataset=str(p.get("dataset", d.dataset)),
                   artifact=str(p.get("artifact", d.artifact)), split=int(p.get("split_index", d.split)),
                   num_classes=int(p.get("num_classes", d.num_classes)),
                   input_size=int(p.get("input_size", d.input_size)))

    def params(self) -> Dict[str, Any]:
        """The executor's parameters for this spec (the inverse of from_params)."""
        return {"model": self.model, "dataset": self.dataset, "artifact": self.artifact, "split_index": self.split,
                "num_classes": self.num_classes, "input_size": self.input_size}
