"""The method contract: a LightningModule that embeds queries and gallery items.

A method implements `encode_query(batch)` and `encode_gallery(batch)` (and, if it trains,
`training_step` / `configure_optimizers`). Hyperparameters are its `__init__` arguments with
the paper's defaults; arguments named in `zsbench.config.DATA_PROVIDED` are filled in by the
runner from the datamodule. The base class owns embedding (`predict_step` embeds one batch,
`embed` runs `Trainer.predict` over a loader: zsbench.embedding) and its checks; metrics are
computed only by `zsbench.evaluation`, never by a method. The family bases declare what their
methods share once: SBIRMethod (seen-class validation), ImageMethod (fine-tuned backbones,
frozen modules, optimizer groups), FeatureMethod and FeatureSpaceMethod (cached features,
side information, pairing).

ZS-CIR methods subclass `CIRMethod`: queries are (reference image, modification text), the
gallery is images, a frozen CLIP is loaded by `setup_clip`, and `train_on` names the training
data (unlabelled images, captions, text triplets or none) that the runner provides.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zsbench.errors import ZsbenchError

CIR_TRAIN_ON = ("images", "captions", "text_triplets", "none")
# the prompt shared by Pic2Word-, SEARLE- and LinCIR-style methods; "$" is the pseudo word
CIR_PROMPT = "a photo of $ that {}"
# how FashionIQ's two captions make a query text (CIRMethod.fashioniq_captions)
FASHIONIQ_CAPTION_RULES = ("both-orders", "pic2word-official")


def stack_class_embeddings(
    class_embeddings: dict, num_classes: int, normalize_single: bool = True
) -> Tensor:
    """One [num_classes, d] tensor from the runner's {source: array}: each source checked,
    L2-normalised per class and concatenated in the dict's order. `normalize_single=False`
    keeps a lone source as it is (methods whose official code feeds raw word vectors)."""
    if not class_embeddings:
        raise ZsbenchError("This method needs class embeddings (model.semantics, e.g. 'minilm').")
    normalize = normalize_single or len(class_embeddings) > 1
    parts = []
    for name, arr in class_embeddings.items():
        t = torch.as_tensor(np.asarray(arr), dtype=torch.float32)
        if t.ndim != 2 or t.shape[0] != num_classes:
            raise ZsbenchError(
                f"class_embeddings[{name!r}] has shape {tuple(t.shape)}; "
                f"expected [num_classes={num_classes}, dim]."
            )
        parts.append(F.normalize(t, dim=-1) if normalize else t)
    return torch.cat(parts, dim=-1)


def rms_scale(batches, target: float) -> float:
    """The scalar that gives the sketch and photo features of `batches` (pair batches) a root
    mean square of `target` (1.0 when they are all zero): for feature-space methods whose
    losses are not scale-invariant, so that they see backbones of any scale alike (CVAE, CAAE,
    CFSA's `feature_rms`)."""
    total, count = 0.0, 0
    for batch in batches:
        for key in ("sketch", "photo"):
            total += float(batch[key].double().square().sum())
            count += batch[key].numel()
    return float(target) / (total / count) ** 0.5 if count and total > 0 else 1.0


@dataclasses.dataclass(frozen=True)
class MethodMetadata:
    """What a method is; recorded in every result and checked by one test over all methods."""

    title: str  # human-readable name
    task: str  # "sbir" or "cir"
    inputs: str  # "features" (cached frozen-backbone features) or "images"
    trains: bool
    paper: str  # citation: authors, title, venue
    year: int | None
    code: str | None  # official repository, "owner/name"
    backbone: str
    side_information: str | None  # e.g. "word2vec + WordNet", None when the method uses none
    deviations: tuple[str, ...] = ()  # where zsbench differs from the paper, and why
    # one line for the leaderboard's notes column: a caveat a reader of the numbers needs
    # (e.g. the measured reason a trained method does not beat the frozen baseline)
    notes: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class RetrievalMethod(L.LightningModule):
    """Base class of every method; subclasses set `metadata` and the encoders."""

    metadata: ClassVar[MethodMetadata]
    similarity: ClassVar[str] = "cosine"  # how the evaluator compares embeddings
    # what training batches hold: "items" (image/feature, label, domain), "pairs" (sketch,
    # photo, label) or "triplets" (sketch, photo, negative, label, negative_label); see
    # zsbench.datamodules.base. Methods with inputs="images" set `self.backbone_info`.
    train_on: ClassVar[str] = "items"

    def encode_query(self, batch: dict) -> Tensor:
        raise NotImplementedError

    def encode_gallery(self, batch: dict) -> Tensor:
        raise NotImplementedError

    # the side that `predict_step` embeds, set by zsbench.embedding for one Trainer.predict
    predict_side: str | None = None

    def embed_batch(self, batch: dict, side: str) -> Tensor:
        """The embeddings [B, D] of one batch on `side` ('query' or 'gallery'), checked."""
        z = self.encode_query(batch) if side == "query" else self.encode_gallery(batch)
        n = len(batch["label"] if "label" in batch else batch["index"])
        if z.ndim != 2 or z.shape[0] != n:
            raise ZsbenchError(
                f"{type(self).__name__}.encode_{side} returned shape {tuple(z.shape)}; "
                f"expected [batch={n}, dim]."
            )
        return z

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """One evaluation batch: its embeddings and labels (what `embed` gathers)."""
        if self.predict_side is None:
            raise ZsbenchError(
                f"{type(self).__name__}.predict_step needs a side: embed through "
                "method.embed(loader, 'query' | 'gallery') (zsbench.embedding)."
            )
        return {
            "embedding": self.embed_batch(batch, self.predict_side).float(),
            "label": batch["label"],
        }

    def embed(self, loader, side: str, trainer_args: dict | None = None) -> tuple[Tensor, Tensor]:
        """Embeddings and labels of every item of `loader`, in its order ('query' or
        'gallery'), by `Trainer.predict` (zsbench.embedding: the same path on CPU, GPU and
        DDP, where every rank gets the whole set)."""
        from zsbench.embedding import predict_embeddings

        rows = predict_embeddings(self, loader, side, trainer_args)
        return rows["embedding"], rows["label"]

    def frozen_modules(self) -> list[nn.Module]:
        """Modules that never train (a frozen CLIP, a teacher): kept in eval mode by `train`."""
        return []

    def train(self, mode: bool = True):
        """Train mode for what trains, eval mode for `frozen_modules` whatever is asked (called
        at every epoch start: on_train_epoch_start)."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def on_train_epoch_start(self) -> None:
        """Enter the method's training modes through its own `train()` at every epoch (frozen
        BatchNorms and frozen teachers in eval mode, the trained parts in train mode). Why:
        Lightning 2.x never calls `model.train()` when `fit` starts, it keeps the modes it finds
        and restores them after each validation, and `create_backbone` returns eval-mode nets,
        so without this a method's `train()` override never ran inside `Trainer.fit`.
        Subclasses that override this hook call `super().on_train_epoch_start()`."""
        self.train()


class SBIRMethod(RetrievalMethod):
    """Base class of ZS-SBIR methods: sketch queries, photo gallery, and the seen-class
    validation every training method logs (`val/mAP`) without writing it again."""

    # -- seen-class validation: retrieval mAP of val sketches against val photos ----------
    # The default hooks collect every validation batch and log `val/mAP`: the learning curve
    # a user reads to tell an undertrained method from a broken one. Seen classes only, never
    # unseen. A method that logs more (e.g. `val/acc`) overrides `validation_step` and calls
    # `super().validation_step(batch, batch_idx)` (or `collect_validation(batch)`) in it.
    # Under DDP each rank embeds its shard; zsbench.SBIRRetrieval gathers the shards and drops
    # the DistributedSampler's padding repeats (by "index"), so every rank logs the number of
    # the whole validation set and early stopping agrees across ranks.
    def collect_validation(self, batch: dict, encoders=None, similarity: str | None = None) -> None:
        """Embed one seen-class validation batch: sketches as queries, photos as gallery, by
        `encode_query` / `encode_gallery` and scored by `similarity` (or the `encoders` pair
        and `similarity` given: e.g. a hashing method's real-valued space before its hash
        exists)."""
        from zsbench.metrics.retrieval_metric import SBIRRetrieval

        similarity = similarity or self.similarity
        metric = self.__dict__.get("_val_metric")
        if metric is None or metric.similarity != similarity:
            metric = self.__dict__["_val_metric"] = SBIRRetrieval(similarity=similarity)
        n = len(batch["label"])
        index = batch.get("index")
        query, gallery = encoders or (self.encode_query, self.encode_gallery)
        for domain, encode in ((0, query), (1, gallery)):
            keep = batch["domain"] == domain
            if not bool(keep.any()):
                continue
            sub = {
                k: v[keep] if isinstance(v, Tensor) and len(v) == n else v for k, v in batch.items()
            }
            z = encode(sub).detach().float()
            metric.to(z.device)
            metric.update(
                z,
                batch["label"][keep].to(z.device),
                domain,
                None if index is None else torch.as_tensor(index)[keep].to(z.device),
            )

    def log_validation_map(self) -> float | None:
        """Log `val/mAP` (mAP@all of the collected batches, all ranks) and return it; None
        without data."""
        metric = self.__dict__.pop("_val_metric", None)
        if metric is None or not metric.update_called:
            return None
        try:
            m_ap = float(metric.compute()["mAP@all"])
        except ZsbenchError:  # a side without items (e.g. a val split of photos only)
            return None
        if np.isfinite(m_ap):
            self.log("val/mAP", m_ap, prog_bar=True)
            return m_ap
        return None

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.collect_validation(batch)

    def on_validation_epoch_end(self) -> None:
        self.log_validation_map()


class ImageMethod(SBIRMethod):
    """A method that trains on images through networks of its own (`metadata.inputs ==
    "images"`: Doodle2Search, RPKD, SketchGCN, DRCPL). The base owns what they share: the
    backbones it fine-tunes (zsbench.backbones.create_backbone with `trainable_stages`), the
    training modes (modules in `frozen_modules`, a teacher or a
    CLIP, stay in eval mode whatever Lightning asks; the BatchNorms of frozen backbone stages
    keep their pretrained statistics) and the optimizer's head / backbone groups. A subclass
    lists its `fine_tuned_backbones` (and, as any method, its `frozen_modules`)."""

    def fine_tuned_backbones(self) -> list[nn.Module]:
        """The backbones whose last stages train (each once, even when shared)."""
        return []

    def train(self, mode: bool = True):
        """As RetrievalMethod's, and the BatchNorms of frozen backbone stages in eval mode."""
        from zsbench.backbones import keep_frozen_batchnorm_in_eval

        super().train(mode)
        if mode:
            for net in self.fine_tuned_backbones():
                keep_frozen_batchnorm_in_eval(net)
        return self

    def parameter_groups(self, head_lr: float, backbone_lr: float) -> list[dict]:
        """Optimizer groups: every trainable parameter outside the backbones at `head_lr`, the
        trainable backbone parameters at `backbone_lr` (left out when none trains)."""
        seen: dict[int, nn.Parameter] = {}
        for net in self.fine_tuned_backbones():
            seen.update((id(p), p) for p in net.parameters())
        backbone = [p for p in seen.values() if p.requires_grad]
        heads = [p for p in self.parameters() if p.requires_grad and id(p) not in seen]
        groups = [{"params": heads, "lr": head_lr}]
        if backbone:
            groups.append({"params": backbone, "lr": backbone_lr})
        return groups


class FeatureMethod(SBIRMethod):
    """A method on cached features of a frozen backbone (`metadata.inputs == "features"`). The
    runner extracts the features with `backbone` and `weights` (ImageNet weights by default,
    or a local file); declared here once, they are config keys and recorded in hparams.
    Subclasses declare only their own arguments and pass the rest on (`**kwargs`); this base
    saves every argument of the chain as hyperparameters (the class embeddings excepted)."""

    def __init__(self, backbone: str = "efficientnet_lite0", weights: str = "default") -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["class_embeddings"])


class FeatureSpaceMethod(FeatureMethod):
    """A head on cached features of both domains with class side information (CFSA, LCALE,
    SEM-PCYC): the data-provided sizes, the side information (`semantics`, zsbench.semantics
    sources, embedded by the runner into `class_embeddings`) and the training pairs
    (`pairing`: "class" pairs any sketch and photo of a class, "instance" a sketch with the
    photo it was drawn from where the dataset knows it). A method states a default of these
    again only where its paper's differs. The side information becomes one [num_classes, d]
    buffer named `side_buffer` (`side_information` builds it)."""

    train_on: ClassVar[str] = "pairs"
    side_buffer: ClassVar[str] = "class_emb"

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        class_embeddings: dict,
        semantics: str = "minilm",
        pairing: str = "class",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.register_buffer(self.side_buffer, self.side_information(class_embeddings, num_classes))

    def side_information(self, class_embeddings: dict, num_classes: int) -> Tensor:
        """The runner's {source: [num_classes, d] array} as one tensor: each source
        L2-normalised per class, concatenated (stack_class_embeddings)."""
        return stack_class_embeddings(class_embeddings, num_classes)


class CIRMethod(RetrievalMethod):
    """Base class of ZS-CIR methods: a frozen CLIP, queries of reference image + text.

    Query batches: {"reference": images [B, 3, S, S], "text": modification texts (raw, not yet
    in the prompt), "index": [B]}; FashionIQ batches also carry "text_reversed" (the two
    captions in the other order), which `embed` encodes as a second pass and combines as
    SEARLE / LinCIR do. Gallery batches: {"image", "index"}. `train_on` picks the training
    batches (see zsbench.datamodules.cir_base): "images", "captions", "text_triplets" or "none".
    """

    train_on: ClassVar[str] = "none"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.train_on not in CIR_TRAIN_ON:
            raise ZsbenchError(
                f"{cls.__name__}.train_on={cls.train_on!r}; one of {', '.join(CIR_TRAIN_ON)}."
            )
        meta = vars(cls).get("metadata")
        if meta is None:
            return
        problems = []
        if meta.task != "cir":
            problems.append(f"task={meta.task!r} (must be 'cir')")
        if meta.inputs != "images":
            problems.append(f"inputs={meta.inputs!r} (must be 'images': CIR evaluates images)")
        if meta.trains != (cls.train_on != "none"):
            problems.append(f"trains={meta.trains} but train_on={cls.train_on!r}")
        if problems:
            raise ZsbenchError(f"{cls.__name__}.metadata: {'; '.join(problems)}.")

    # set by `load_released_phi`: the run scores these released weights instead of training
    loaded_checkpoint: str | None = None

    def load_released_phi(self, path: str | None, containers: tuple[str, ...]) -> None:
        """`model.checkpoint=PATH`: the authors' released phi (keys under one of `containers`,
        "module." stripped) loaded and frozen; the runner then skips training."""
        if not path:
            return
        from zsbench.checkpoints import load_official

        load_official(self.phi, path, containers, "phi")
        self.loaded_checkpoint = str(path)

    def setup_clip(self, name: str) -> None:
        """Load the frozen CLIP `name` (zsbench.clip.load_clip) and its tokenizer."""
        from zsbench.clip import load_clip

        loaded = load_clip(name)
        self.clip = loaded.model
        self.tokenizer = loaded.tokenizer
        self.backbone_info = loaded.info
        self.image_size = loaded.image_size

    def frozen_modules(self) -> list[nn.Module]:
        """CLIP is frozen: it stays in eval mode whatever is asked."""
        clip = getattr(self, "clip", None)
        return [clip] if isinstance(clip, nn.Module) else []

    def image_features(self, images: Tensor) -> Tensor:
        """CLIP's projected (unnormalised) image features [B, D], resized to its input size."""
        from zsbench.clip import encode_image, fit_image_size

        return encode_image(self.clip, fit_image_size(images, self.image_size))

    def compose(self, texts: list[str]) -> list[str]:
        """The query prompts: the method's `prompt` hyperparameter (else CIR_PROMPT) per text."""
        template = getattr(self, "hparams", {}).get("prompt", CIR_PROMPT)
        return [template.format(t) for t in texts]

    def encode_gallery(self, batch: dict) -> Tensor:
        return torch.nn.functional.normalize(self.image_features(batch["image"]).float(), dim=-1)

    def fashioniq_captions(self) -> str:
        """How FashionIQ's two captions make the query text: "both-orders" (the benchmark's
        rule, SEARLE / LinCIR: stripped, "c1 and c2" and "c2 and c1" averaged) or
        "pic2word-official" (a method's `fashioniq_captions` hyperparameter)."""
        rule = getattr(self, "hparams", {}).get("fashioniq_captions", "both-orders")
        if rule not in FASHIONIQ_CAPTION_RULES:
            raise ZsbenchError(
                f"fashioniq_captions={rule!r}: use one of {', '.join(FASHIONIQ_CAPTION_RULES)}."
            )
        return rule

    def embed_batch(self, batch: dict, side: str) -> Tensor:
        """One batch's embeddings [B, D]; FashionIQ's second caption order is encoded and
        combined here."""
        from zsbench.metrics.cir import combine_caption_orders

        if side == "gallery" or "caption_1" not in batch and "text_reversed" not in batch:
            return super().embed_batch(batch, side)
        if "caption_1" in batch and self.fashioniq_captions() == "pic2word-official":
            # Pic2Word's evaluation (official src/data.py): one order, the second caption
            # first, the captions as written (not stripped)
            text = [f"{b} and {a}" for a, b in zip(batch["caption_1"], batch["caption_2"])]
            return super().embed_batch({**batch, "text": text}, side)
        z = super().embed_batch(batch, side)
        if "text_reversed" in batch:
            z2 = super().embed_batch({**batch, "text": batch["text_reversed"]}, side)
            z = combine_caption_orders(z.float(), z2.float())
        return z

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """One evaluation batch: its embeddings and dataset indices."""
        if self.predict_side is None:
            super().predict_step(batch, batch_idx)  # the error naming how to embed
        return {
            "embedding": self.embed_batch(batch, self.predict_side).float(),
            "index": batch["index"],
        }

    def embed(self, loader, side: str, trainer_args: dict | None = None) -> tuple[Tensor, Tensor]:
        """Embeddings [N, D] and dataset indices [N] of every item of `loader` ('query' or
        'gallery'), by `Trainer.predict` (zsbench.embedding)."""
        from zsbench.embedding import predict_embeddings

        rows = predict_embeddings(self, loader, side, trainer_args)
        return rows["embedding"], rows["index"]
