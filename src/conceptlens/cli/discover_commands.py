"""`conceptlens discover`: train (or load from the cache) a sparse autoencoder on an unlabelled
image pool and name its latents (Discover-then-Name's discovery step, outside a run).

The same code as a run's [discovery] step (runs/discovery.py), so the SAE this command trains is
the one a run with the same pool, backbone and parameters loads from the cache.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np

from .._io import write_text
from ..discovery.naming import name_latents
from ..errors import ConfigError, UsageError
from . import arg_types
from .data_commands import add_encode_options

# Imports of the packages that load torch or scikit-learn (backbones, features, methods, runs,
# evaluation, grounding, explain, report, demo) stay inside the commands that need them, so
# that `conceptlens --help` and argument errors answer at once.

SORTS = ("fired", "similarity", "index")
# argparse destination -> train_sae parameter
SAE_OPTIONS = {"expansion": "expansion", "l1": "l1", "lr": "lr", "epochs": "epochs",
               "sae_batch_size": "batch_size", "resample_every": "resample_every", "sae_seed": "seed",
               "precision": "precision"}


def _config(args):
    from ..runs.config import DiscoveryConfig, validate_discovery

    sae: dict | str
    if args.sae is not None:
        sae = args.sae
    else:
        sae = {k: getattr(args, n) for n, k in SAE_OPTIONS.items() if getattr(args, n) is not None}
    d = DiscoveryConfig(pool=args.pool or "", pool_size=args.pool_size, seed=args.pool_seed, input=args.input,
                        vocabulary=args.vocabulary, vocabulary_size=args.vocabulary_size, sae=sae)
    if args.pool is None:
        if args.sae is None:
            raise UsageError("discover needs --pool (the unlabelled images to train the SAE on, e.g. "
                             "--pool fashion-mnist:train) or --sae (a saved SAE to name).")
        d.pool = "train"  # unused: nothing is encoded when the SAE comes from a file
    elif args.pool == "train":
        raise UsageError("--pool train means a run's own training images; here give a dataset spec, e.g. "
                         "--pool fashion-mnist:train, or a folder of images.")
    try:
        return validate_discovery(d)
    except ConfigError as e:  # say it in the command line's words: "[discovery] pool_size" -> "--pool-size"
        raise UsageError(re.sub(r"\[discovery(\.sae)?\] (\w+)", _flag, str(e))) from None


FLAGS = {("", "seed"): "--pool-seed", (".sae", "seed"): "--sae-seed",
         (".sae", "batch_size"): "--sae-batch-size"}


def _flag(m: re.Match) -> str:
    section, key = m.group(1) or "", m.group(2)
    return FLAGS.get((section, key), "--" + key.replace("_", "-"))


def name_table(names: list[dict], sort: str = "fired", show: int = 50, fired=None) -> str:
    """The alive latents as a text table: index, name, similarity, second-best name, fired."""
    fired = np.zeros(len(names), np.int64) if fired is None else np.asarray(fired)
    alive = [r for r in names if not r.get("dead")]
    keys = {"fired": lambda r: (-int(fired[r["latent"]]), r["latent"]),
            "similarity": lambda r: (-r["similarity"], r["latent"]), "index": lambda r: r["latent"]}
    rows = sorted(alive, key=keys[sort])
    shown = rows if not show else rows[:show]
    width = max([4, *(len(str(r.get("name") or r.get("nearest"))) for r in shown)])
    lines = [f"{'latent':>6}  {'name':<{width}}  {'sim':>6}  {'second (sim)':<24}  {'fired':>7}"]
    for r in shown:
        second = "—" if r.get("second") is None else f"{r['second']} ({r['second_similarity']:.3f})"
        name = r.get("name") or f"({r.get('nearest')})"
        lines.append(f"{r['latent']:>6}  {name:<{width}}  {r['similarity']:>6.3f}  {second:<24}  "
                     f"{int(fired[r['latent']]):>7}")
    if len(rows) > len(shown):
        lines.append(f"... {len(rows) - len(shown)} more alive latent(s); --show 0 lists all, --names-csv "
                     "writes every latent")
    return "\n".join(lines)


def names_csv(names: list[dict], fired=None) -> str:
    """Every latent, dead ones included: latent, name, nearest, similarity, second,
    second_similarity, fired, dead, reason."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["latent", "name", "nearest", "similarity", "second", "second_similarity", "fired", "dead",
                "reason"])
    for r in names:
        sim2 = r.get("second_similarity")
        w.writerow([r["latent"], r.get("name") or "", r.get("nearest") or "", f"{r['similarity']:.4f}",
                    r.get("second") or "", "" if sim2 is None else f"{sim2:.4f}",
                    "" if fired is None else int(fired[r["latent"]]), int(bool(r.get("dead"))),
                    r.get("reason") or ""])
    return buf.getvalue()


def summary(names: list[dict], sae) -> str:
    dead = sum(bool(r.get("dead")) for r in names)
    alive = [r["similarity"] for r in names if not r.get("dead")]
    distinct = len({r["name"] for r in names if r.get("name")})
    meta = getattr(sae, "meta", {}) or {}
    history = meta.get("history") or []
    train = (f"; final mse {history[-1]['mse']:.4g}, L0 {history[-1]['L0']:.1f}" if history else "")
    mean = f"{np.mean(alive):.3f}" if alive else "—"
    return (f"SAE {sae.d} -> {sae.h} latents ({meta.get('input', '?')} input, backbone "
            f"{meta.get('backbone_id', '?')}){train}. Alive {len(names) - dead}, dead {dead}; "
            f"{distinct} distinct names; mean naming similarity of alive latents {mean}.")


def cmd_discover(args) -> int:
    from ..features.encode import image_cache
    from ..runs.config import DataConfig
    from ..runs.discovery import get_sae, load_pool, load_words, word_embeddings
    from ..runs.experiment import open_backbone

    d = _config(args)
    backbone = open_backbone(args.backbone, args.cache_dir)
    cache_root = None if args.cache_dir is None else Path(args.cache_dir) / "features"
    pool = None
    if args.sae is None:
        data = DataConfig(dataset="", on_error=args.on_error)
        pool = load_pool(d, data, backbone, image_cache(backbone, cache_root), None, args.batch_size,
                         args.workers, not args.no_progress, for_sae=True)
    sae, sae_id = get_sae(d, pool, backbone.id, args.cache_dir, not args.no_progress)
    words = load_words(d)
    emb = word_embeddings(backbone, words, cache_root)

    names = name_latents(sae.decoder_directions(), words, emb, fired=sae.fired_)
    print(name_table(names, args.sort, args.show, sae.fired_))
    print(summary(names, sae))
    print(f"SAE id {sae_id}" + ("" if pool is None else f"; pool {len(pool['ids'])} images of {args.pool}"))
    if args.out:
        sae.save(args.out)
        print(f"wrote {args.out}")
    if args.names_csv:
        write_text(args.names_csv, names_csv(names, sae.fired_))
        print(f"wrote {args.names_csv}")
    return 0


def add_commands(sub) -> None:
    # from discovery.sae, not runs.config (pydantic and every method): `--help` loads no torch
    from ..discovery.sae import INPUTS, PRECISIONS as SAE_PRECISIONS

    DISCOVERY_INPUTS = ("auto", *INPUTS)  # as runs.config's

    p = sub.add_parser("discover", help="train a sparse autoencoder on unlabelled images and name its "
                                        "latents (Discover-then-Name)")
    p.add_argument("--pool", help="unlabelled images: a dataset spec with an optional split, e.g. "
                                  "fashion-mnist:train, a folder or a manifest (labels are never used)")
    p.add_argument("--pool-size", type=int, default=0, help="images drawn from the pool (0 = all)")
    p.add_argument("--pool-seed", type=arg_types.seed, default=0, help="seed of the --pool-size draw")
    p.add_argument("--input", choices=DISCOVERY_INPUTS, default="auto",
                   help="SAE input: raw embeddings (the reference) or L2-normalised; auto = raw when the "
                        "backbone reports norms")
    p.add_argument("--vocabulary", default="wordfreq", help="wordfreq | wordnet | a word-list file")
    p.add_argument("--vocabulary-size", type=int, default=20000)
    p.add_argument("--sae", help="a saved SAE file to name instead of training one (checked against the "
                                 "backbone)")
    g = p.add_argument_group("SAE training (defaults: the reference's released configuration)")
    g.add_argument("--expansion", type=int, help="latents per embedding dimension (8, or pool images // d on a smaller pool)")
    g.add_argument("--l1", type=arg_types.finite_float, help="sparsity penalty (3e-5)")
    g.add_argument("--lr", type=arg_types.finite_float, help="Adam learning rate (5e-4)")
    g.add_argument("--epochs", type=int, help="(200)")
    g.add_argument("--sae-batch-size", type=int, help="SAE training batch (4096)")
    g.add_argument("--resample-every", type=int, help="epochs between dead-latent resampling (10; 0 = never)")
    g.add_argument("--sae-seed", type=arg_types.seed, help="(0)")
    g.add_argument("--precision", choices=SAE_PRECISIONS, help="matmul precision (auto)")
    p.add_argument("--out", help="also save the SAE to this .safetensors file")
    p.add_argument("--names-csv", help="write every latent's name, similarity and status to this CSV")
    p.add_argument("--sort", choices=SORTS, default="fired", help="order of the printed table")
    p.add_argument("--show", type=int, default=50, help="latents printed (0 = all alive ones)")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail", help="a corrupt pool image")
    add_encode_options(p)
    p.set_defaults(func=cmd_discover)
