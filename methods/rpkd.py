"""RPKD: Relationship-Preserving Knowledge Distillation for zero-shot SBIR.

Paper: Jialin Tian, Xing Xu, Zheng Wang, Fumin Shen, Xin Liu, "Relationship-Preserving Knowledge
Distillation for Zero-Shot Sketch Based Image Retrieval", ACM MM 2021 (doi 10.1145/3474085.3475676).
Official code: none public (searched GitHub for "RPKD", "Relationship-Preserving Knowledge
Distillation", the authors' names). RPKD builds on SAKE's teacher-student framework
(qliu24/SAKE): the training recipe (Adam, lr 1e-4, weight decay 5e-4, lr * 0.001^(epoch/epochs),
512-d embedding, 20 epochs) follows SAKE's code where the paper text is not at hand.

A frozen ImageNet-pretrained teacher (a second instance of the student's backbone, eval mode,
no gradients) embeds every training image; the student (backbone + linear 512-d embedding +
seen-class linear classifier) is trained on seen-class sketches and photos with

  L = L_cls + lambda_ins * L_ins + lambda_con * L_con + lambda_eis * L_eis

- L_cls: cross-entropy of the student's classifier over the seen classes (both domains);
- L_ins (instance-level relationship): the teacher's pairwise cosine similarities among the
  batch instances, as row-wise softmax distributions at temperature `tau_ins` (diagonal left
  out), are the targets of the student's: KL(teacher row || student row), averaged over rows;
  over the whole batch (`relations="batch"`) or inside each domain (`relations="domain"`,
  the default);
- L_con (contrastive relationship between embedding spaces): InfoNCE with temperature
  `tau_con` from a linear projection of the student embedding into the teacher space, whose
  positive is the teacher embedding of the same instance and negatives the teacher embeddings
  of the other batch instances;
- L_eis (embedding-induced supervision): class embedding centres = mean of the teacher's
  (L2-normalised) embeddings of the seen-class training photos (`centres="photo"`; with
  `centres="domain"`, the default, also sketch centres, each item compared with its own
  domain's), computed once when training starts and then fixed. An instance's cosine
  similarities to its `top_k` most similar centres (the "partial" centres), softmax at
  `tau_eis`, are the target of the student classifier's confidences restricted to the same
  classes (KL).
No semantic side information (word vectors, WordNet) is used, as in the paper.
At test time sketches and photos are embedded by the student (L2-normalised 512-d, cosine).

Deviations from the paper: `Rpkd.metadata.deviations` (rendered on docs/methods/rpkd.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zsbench.backbones import create_backbone
from zsbench.errors import ZsbenchError
from zsbench.methods.base import ImageMethod, MethodMetadata

SKETCH, PHOTO = 0, 1

# ---------------------------------------------------------------------------------------------
# Losses (pure functions; computed in float32 whatever the autocast dtype)
# ---------------------------------------------------------------------------------------------


def _offdiag_cosine(x: Tensor) -> Tensor:
    """Pairwise cosine similarities [B, B] with the diagonal masked to -inf."""
    x = F.normalize(x.float(), dim=-1)
    sim = x @ x.T
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    return sim.masked_fill(eye, float("-inf"))


def relation_distillation_loss(student: Tensor, teacher: Tensor, tau: float) -> Tensor:
    """Instance-level relationship distillation: mean over rows i of
    KL(softmax_j(cos(t_i, t_j) / tau) || softmax_j(cos(s_i, s_j) / tau)), j != i.

    The two embeddings may have different widths (only the B x B relations are compared).
    0 when the student's relations equal the teacher's (e.g. student == teacher).
    """
    if len(student) < 3:  # with < 2 neighbours per row the distributions are trivially equal
        return student.float().sum() * 0.0
    log_s = F.log_softmax(_offdiag_cosine(student) / tau, dim=-1)
    log_t = F.log_softmax(_offdiag_cosine(teacher) / tau, dim=-1)
    off = ~torch.eye(len(student), dtype=torch.bool, device=student.device)
    kl = (log_t.exp() * (log_t - log_s)).masked_fill(~off, 0.0).sum(-1)
    return kl.mean()


def within_domain_relation_loss(
    student: Tensor, teacher: Tensor, domains: Tensor | None, tau: float
) -> Tensor:
    """`relation_distillation_loss` inside each domain of the batch (sketch rows with sketch
    rows, photo rows with photo rows), weighted by each domain's share of the batch.

    An ImageNet teacher keeps sketches far from photos of their own class (its sketch -> photo
    mAP is the frozen baseline's), so its cross-domain relations are mostly the domain gap;
    distilling them over the mixed batch teaches the student to keep that gap. Within a
    domain the teacher's relations are the inter-class structure RPKD means to preserve.
    `domains=None`: the whole batch is one group.
    """
    if domains is None:
        return relation_distillation_loss(student, teacher, tau)
    total = student.float().sum() * 0.0
    for d in domains.unique():
        rows = domains == d
        total = total + relation_distillation_loss(student[rows], teacher[rows], tau) * (
            rows.float().mean()
        )
    return total


def contrastive_relation_loss(student_in_teacher: Tensor, teacher: Tensor, tau: float) -> Tensor:
    """InfoNCE between embedding spaces: row i of cos(student_i, teacher_j) / tau is classified
    as j = i (the same instance's teacher embedding is the positive, the other instances' the
    negatives). `student_in_teacher` is the student embedding projected to the teacher width."""
    s = F.normalize(student_in_teacher.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    logits = s @ t.T / tau
    return F.cross_entropy(logits, torch.arange(len(s), device=s.device))


def class_centres(embeddings: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class mean of `embeddings` [N, D] -> (centres [num_classes, D], has_centre [C] bool).
    Classes without any row get a zero centre and has_centre False."""
    emb = embeddings.float()
    sums = torch.zeros(num_classes, emb.shape[1], dtype=emb.dtype, device=emb.device)
    sums.index_add_(0, labels, emb)
    counts = torch.bincount(labels, minlength=num_classes).to(emb.dtype)
    has = counts > 0
    return sums / counts.clamp(min=1).unsqueeze(1), has


def embedding_induced_loss(
    student_logits: Tensor,
    teacher: Tensor,
    centres: Tensor,
    has_centre: Tensor,
    top_k: int,
    tau: float,
) -> Tensor:
    """Embedding-induced supervision: the target is softmax over the `top_k` classes whose
    teacher centres are most cosine-similar to the instance's teacher embedding, of those
    similarities / tau; the student's classifier logits, restricted to the same classes, are
    pulled to it with KL(target || student)."""
    t = F.normalize(teacher.float(), dim=-1)
    sim = t @ F.normalize(centres.float(), dim=-1).T
    sim = sim.masked_fill(~has_centre.unsqueeze(0), float("-inf"))
    k = max(1, min(int(top_k), int(has_centre.sum())))
    top_sim, top_idx = sim.topk(k, dim=-1)
    target = F.softmax(top_sim / tau, dim=-1)
    log_student = F.log_softmax(student_logits.float().gather(1, top_idx), dim=-1)
    return (target * (target.clamp_min(1e-12).log() - log_student)).sum(-1).mean()


# ---------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------


class Rpkd(ImageMethod):
    """Student fine-tuned on seen classes, distilled from a frozen ImageNet teacher."""

    metadata = MethodMetadata(
        title="RPKD",
        task="sbir",
        inputs="images",
        trains=True,
        paper=(
            "Tian, Xu, Wang, Shen, Liu: Relationship-Preserving Knowledge Distillation for "
            "Zero-Shot Sketch Based Image Retrieval, ACM MM 2021"
        ),
        year=2021,
        code=None,
        backbone="efficientnet_lite0 (ImageNet-1k) student and frozen teacher",
        side_information=None,
        deviations=(
            "**Backbone**: EfficientNet-Lite0 (ImageNet) for teacher and student instead of the "
            "paper's CSE-ResNet-50 / SE-ResNet-50 (SAKE framework), whose weights are not "
            "available offline.",
            "**Teacher embedding space**: the teacher's pooled 1280-d features, not its ImageNet "
            "classifier output; the contrastive term maps the student's 512-d embedding into it "
            "with a trainable linear projection.",
            "**No official code**: the exact loss forms (row-softmax KL of cosine relations; "
            "one-direction student-to-teacher InfoNCE with in-batch negatives; top-k centre KL), "
            "the temperatures, top_k and the unit loss weights are zsbench's reading of the "
            "paper's description and could not be checked against released code or the paper's "
            "hyper-parameter table offline. All are `__init__` arguments (`tau_*`, `lambda_*`, "
            "`top_k`), so that a user with the paper can set them.",
            "**Recipe and CPU-sized training**: the recipe is SAKE's code (Adam, lr 1e-4, weight "
            "decay 5e-4, lr x 0.001^(epoch/epochs) per epoch, 512-d embedding, 20 epochs, batch "
            "40, 224 px, full fine-tuning); the CPU default (configs/methods/rpkd.yaml) trains "
            "only the last `trainable_stages=2` backbone stages (the frozen stages' BatchNorms "
            "in eval mode) with a 10x lr on the new layers (`head_lr_mult`), for 2 epochs, "
            "batch 32, on 96 px (synthetic) / 128 px (sketchy21-mini, sketchy-mini) images; "
            "`--set preset=paper` restores SAKE's recipe.",
            "**Batches** are random seen-class items of both domains from one loader, not "
            "SAKE's 1/3 sketches + 2/3 photos from two loaders (13 + 26 at batch 40).",
            "**Class centres** come from the un-augmented training items (teacher, once, at the "
            "start of training), then stay fixed.",
            "**Relations and centres per domain** by default (`relations=domain`, "
            "`centres=domain`, `tau_ins=1.0`; the paper's reading, one relation matrix over "
            "the batch, photo centres and tau_ins 0.1, is `relations=batch`, `centres=photo`, "
            "`tau_ins=0.1`, which `preset=paper` sets): an ImageNet teacher's sketch-photo "
            "relations are mostly the domain gap, and distilling them over mixed batches kept "
            "the student at the frozen line on sketchy21-mini (0.293 vs 0.291); within each "
            'domain they carry the inter-class structure (0.355, seed 0; see "Why per '
            'domain").',
            "**Evaluated weights**: the last epoch's; SAKE's code (RPKD's lineage) tests "
            "`model_best.pth.tar`, the epoch of best seen-class validation accuracy. zsbench "
            "logs seen-class validation mAP but selects no epoch with it.",
        ),
    )
    similarity = "cosine"
    train_on = "items"

    def __init__(
        self,
        num_classes: int,
        backbone: str = "efficientnet_lite0",
        weights: str = "default",
        teacher_backbone: str | None = None,
        teacher_weights: str | None = None,
        trainable_stages: int | None = 2,
        embedding_dim: int = 512,
        lambda_cls: float = 1.0,
        lambda_ins: float = 1.0,
        lambda_con: float = 1.0,
        lambda_eis: float = 1.0,
        tau_ins: float = 1.0,
        relations: str = "domain",
        centres: str = "domain",
        tau_con: float = 0.07,
        tau_eis: float = 0.1,
        top_k: int = 10,
        lr: float = 1e-4,
        head_lr_mult: float = 10.0,
        weight_decay: float = 5e-4,
        lr_decay: float = 1e-3,
        share_frozen_trunk: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if relations not in ("batch", "domain"):
            raise ZsbenchError(f"rpkd: relations must be 'batch' or 'domain', got {relations!r}.")
        if centres not in ("photo", "domain"):
            raise ZsbenchError(f"rpkd: centres must be 'photo' or 'domain', got {centres!r}.")
        self.student, self.backbone_info = create_backbone(backbone, weights, trainable_stages)
        # frozen and in eval mode whatever Lightning asks (frozen_modules)
        self.teacher, self.teacher_info = create_backbone(
            teacher_backbone or backbone, teacher_weights or weights, trainable_stages=0
        )
        d_s, d_t = self.backbone_info.feature_dim, self.teacher_info.feature_dim
        self.projection = nn.Linear(d_s, embedding_dim)
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.to_teacher = nn.Linear(embedding_dim, d_t)  # student -> teacher space (L_con)
        self.register_buffer("centres", torch.zeros(num_classes, d_t))  # photo centres
        self.register_buffer("has_centre", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("sketch_centres", torch.zeros(num_classes, d_t))
        self.register_buffer("has_sketch_centre", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("centres_ready", torch.zeros((), dtype=torch.bool))
        self.shared_stages = self._shared_stages() if share_frozen_trunk else None

    def _shared_stages(self) -> int | None:
        """How many leading block stages the student and the teacher can compute once.

        When both are the same EfficientNet-style timm model (conv_stem, bn1, blocks, conv_head,
        bn2) from the same weights file and the student's stem and first stages are frozen
        (their BatchNorms kept in eval mode, see `train`), those layers compute the same thing in
        both networks: run them once, then each network's own remaining stages. Saves most of
        the teacher's cost on CPU; the result is identical to two full forwards (tested).
        None: no sharing (different backbones or weights, random weights, full fine-tuning).
        """
        s, t = self.student, self.teacher
        parts = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "forward_head")
        same = (
            self.backbone_info.name == self.teacher_info.name
            and self.backbone_info.weights_sha256 is not None
            and self.backbone_info.weights_sha256 == self.teacher_info.weights_sha256
        )
        if not same or not all(hasattr(s, a) and hasattr(t, a) for a in parts):
            return None
        if any(p.requires_grad for m in (s.conv_stem, s.bn1) for p in m.parameters()):
            return None
        n = 0
        while n < len(s.blocks) and not any(p.requires_grad for p in s.blocks[n].parameters()):
            n += 1
        return n

    # -- modes ---------------------------------------------------------------------------
    def fine_tuned_backbones(self) -> list[nn.Module]:
        return [self.student]

    def frozen_modules(self) -> list[nn.Module]:
        return [self.teacher]  # its BatchNorm statistics stay the ImageNet ones

    # -- embeddings ----------------------------------------------------------------------
    def student_forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(unnormalised student embedding [B, E], seen-class logits [B, C])."""
        z = self.projection(self.student(images))
        return z, self.classifier(z)

    @torch.no_grad()
    def teacher_forward(self, images: Tensor) -> Tensor:
        """Teacher embedding [B, D_t] (pooled ImageNet features), never differentiated."""
        self.teacher.eval()
        return self.teacher(images)

    def student_and_teacher(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(student embedding, student logits, teacher embedding) of one batch, computing the
        shared frozen trunk once when possible (see `_shared_stages`)."""
        n = self.shared_stages
        if n is None:
            z, logits = self.student_forward(images)
            return z, logits, self.teacher_forward(images)
        s, t = self.student, self.teacher
        with torch.no_grad():
            h = s.blocks[:n](s.bn1(s.conv_stem(images)))
            self.teacher.eval()
            t_emb = t.forward_head(t.bn2(t.conv_head(t.blocks[n:](h))))
        z = self.projection(s.forward_head(s.bn2(s.conv_head(s.blocks[n:](h)))))
        return z, self.classifier(z), t_emb

    def encode_query(self, batch: dict) -> Tensor:
        return F.normalize(self.projection(self.student(batch["image"])).float(), dim=-1)

    encode_gallery = encode_query

    # -- class centres ---------------------------------------------------------------------
    @torch.no_grad()
    def _domain_centres(self) -> tuple[tuple[int, Tensor, Tensor], ...]:
        """(domain, centre buffer, has-centre mask) for photos and sketches."""
        return (
            (PHOTO, self.centres, self.has_centre),
            (SKETCH, self.sketch_centres, self.has_sketch_centre),
        )

    def set_class_centres(
        self, teacher_embeddings: Tensor, labels: Tensor, domains: Tensor | None = None
    ) -> None:
        """Fix the centres from teacher embeddings of seen-class items and their labels:
        photo centres from the photo rows, sketch centres from the sketch rows (`domains`;
        None: every row is a photo)."""
        if domains is None:
            domains = torch.full_like(labels, PHOTO)
        emb = F.normalize(teacher_embeddings.float(), dim=-1)
        for domain, centres, has in self._domain_centres():
            rows = domains == domain
            c, h = class_centres(emb[rows], labels[rows], self.hparams.num_classes)
            centres.copy_(c)
            has.copy_(h)
        self.centres_ready.fill_(True)

    @torch.no_grad()
    def compute_class_centres(self, loader) -> None:
        """Centres from the training items of `loader`: un-augmented, when the loader is a
        zsbench item loader (its images are re-read with the evaluation transform), else from
        its batches as they come. Sketches are embedded only when `centres="domain"`."""
        from zsbench.datamodules.base import ItemDataset

        domains = (PHOTO, SKETCH) if self.hparams.centres == "domain" else (PHOTO,)
        ds = getattr(loader, "dataset", None)
        if isinstance(ds, ItemDataset) and ds.dm.features is None:
            keep = [int(i) for i in ds.indices if ds.dm.items[int(i)].domain in domains]
            loader = torch.utils.data.DataLoader(
                ItemDataset(ds.dm, np.array(keep, dtype=np.int64), train=False),
                batch_size=ds.dm.eval_batch_size,
                shuffle=False,
                num_workers=ds.dm.num_workers,
            )
        embs, labels, doms = [], [], []
        for batch in loader:
            keep = sum(batch["domain"] == d for d in domains).bool()
            if keep.any():
                images = batch["image"][keep].to(self.device)
                embs.append(self.teacher_forward(images).float())
                labels.append(batch["label"][keep].to(self.device))
                doms.append(batch["domain"][keep].to(self.device))
        if not embs or not bool((torch.cat(doms) == PHOTO).any()):
            raise ZsbenchError("RPKD needs seen-class training photos to compute class centres.")
        self.set_class_centres(torch.cat(embs), torch.cat(labels), torch.cat(doms))

    def on_train_start(self) -> None:
        if not bool(self.centres_ready):
            self.compute_class_centres(self.trainer.train_dataloader)

    # -- training --------------------------------------------------------------------------
    def embedding_induced(self, logits: Tensor, t: Tensor, domains: Tensor | None) -> Tensor:
        """L_eis against the photo centres (`centres="photo"`, or no domains given), or each
        row against the centres of its own domain (`centres="domain"`), batch-weighted."""
        hp = self.hparams
        if hp.centres == "photo" or domains is None:
            return embedding_induced_loss(
                logits, t, self.centres, self.has_centre, hp.top_k, hp.tau_eis
            )
        total = logits.float().sum() * 0.0
        for domain, centres, has in self._domain_centres():
            rows = domains == domain
            if rows.any() and has.any():
                loss = embedding_induced_loss(
                    logits[rows], t[rows], centres, has, hp.top_k, hp.tau_eis
                )
                total = total + loss * rows.float().mean()
        return total

    def losses(
        self, images: Tensor, labels: Tensor, domains: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Every loss term on one batch of images (`domains`: 0 sketch, 1 photo per row; None
        treats the batch as one domain), and their weighted sum under 'loss'."""
        hp = self.hparams
        z, logits, t = self.student_and_teacher(images)
        rel_domains = domains if hp.relations == "domain" else None
        out = {
            "cls": F.cross_entropy(logits.float(), labels),
            "ins": within_domain_relation_loss(z, t, rel_domains, hp.tau_ins),
            "con": contrastive_relation_loss(self.to_teacher(z), t, hp.tau_con),
            "eis": self.embedding_induced(logits, t, domains),
        }
        out["loss"] = (
            hp.lambda_cls * out["cls"]
            + hp.lambda_ins * out["ins"]
            + hp.lambda_con * out["con"]
            + hp.lambda_eis * out["eis"]
        )
        out["acc"] = (logits.argmax(-1) == labels).float().mean()
        return out

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        if not bool(self.centres_ready):
            raise ZsbenchError(
                "RPKD: class centres are not set; call compute_class_centres(loader) or "
                "set_class_centres(...) before training outside a Lightning Trainer."
            )
        out = self.losses(batch["image"], batch["label"], batch["domain"])
        n = len(batch["label"])
        for key, value in out.items():
            self.log(f"train/{key}", value, prog_bar=key in ("loss", "acc"), batch_size=n)
        return out["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        z, logits = self.student_forward(batch["image"])
        acc = (logits.argmax(-1) == batch["label"]).float().mean()
        self.log("val/acc", acc, prog_bar=True, batch_size=len(logits))
        super().validation_step(batch, batch_idx)  # seen-class retrieval curve (val/mAP)

    def configure_optimizers(self):
        hp = self.hparams
        groups = self.parameter_groups(head_lr=hp.lr * hp.head_lr_mult, backbone_lr=hp.lr)
        opt = torch.optim.Adam(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        epochs = max(1, int(self.trainer.max_epochs or 1)) if self._trainer is not None else 1
        # SAKE: lr * 0.001 ** (epoch / epochs), stepped per epoch
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: math.pow(hp.lr_decay, min(e, epochs) / epochs)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
