"""Face identity end to end on real footage of three people (tests/faces.py): embeddings made while
processing, backfilled by `embed`, the `embeddings` view and snapshots, `lookalike` (top-5 all the
query's person, on frames not in the dataset), and on a CPU-trained tiny diffusion model of those
faces: DDIM inversion, `sample diffusion --morph` and the face-quality figure."""

import json
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from stream2dataset.config import TrainingConfig, load_config
from stream2dataset.dataset.catalog import open_catalog, query as run_sql
from stream2dataset.dataset.snapshots import create_snapshot, open_snapshot
from stream2dataset.layout import Storage
from stream2dataset.processing.identity import MODEL, FaceEmbedder, frechet_distance
from stream2dataset.processing.lookalike import embed_dataset
from stream2dataset.processing.pipeline import file_segments, process_inline
from stream2dataset.training.data import decode_image
from stream2dataset.training.diffusion import build_scheduler, ddim_sample, diffusion_loss
from stream2dataset.training.morph import ddim_invert
from stream2dataset.training.runs import write_run_info
from stream2dataset.training.tasks import TASKS
from stream2dataset.training.tensors import to_uint8, to_unit

from .faces import PEOPLE, astronaut_png, identity_footage

pytestmark = pytest.mark.slow  # one shared root: processing with embeddings costs ~25 s on the 2-core machine

TINY = {"diffusion": {"resolution": 32, "base_channels": 16, "channel_mults": [1, 2], "attention_levels": [1],
                      "layers_per_block": 1, "dropout": 0.0, "timesteps": 1000, "sample_steps": 20}}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Three people's dataset videos processed into aligned_face crops with embeddings; their queries."""
    tmp = tmp_path_factory.mktemp("lookalike")
    videos, queries = identity_footage(tmp)
    (tmp / "stream2dataset.yaml").write_text(yaml.safe_dump({
        "storage": {"root": "data"},
        "processing": {"auto": False, "outputs": ["aligned_face"], "sample_fps": 6, "min_crop_px": 32,
                       "dedup_distance": 0, "embeddings": True, "transforms": [{"resize": {"size": 64}}]}}))
    cfg = load_config(tmp / "stream2dataset.yaml")
    report = process_inline(cfg, file_segments([videos]))
    assert report["kept"] >= 30, report
    return Storage.of(cfg), cfg, queries, tmp


def _people(rows: list[dict]) -> list[str]:
    return [r["source_id"].removesuffix(".mp4") for r in rows]


def test_processing_writes_one_embedding_per_face_crop_in_the_view(root):
    storage, *_ = root
    with open_catalog(storage.root) as con:
        frames = con.execute("SELECT count(*) FROM frames_all WHERE kind = 'aligned_face'").fetchall()[0][0]
        rows = con.execute("SELECT model, typeof(vector), count(*), count(DISTINCT frame_id) FROM embeddings "
                           "JOIN frames_all USING (frame_id) GROUP BY ALL").fetchall()
        first = con.execute("SELECT frame_id FROM embeddings JOIN frames USING (frame_id) ORDER BY frame_id LIMIT 1"
                            ).fetchall()[0][0]
    # the nearest-face query the README documents runs as written, through `sql`
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    query = readme.split("The 5 faces nearest a frame, in SQL:\n\n```sql\n")[1].split("```")[0]
    query = query.replace("0411c71dc376976402a79f68", first)
    table, _ = run_sql(storage.root, query)
    assert table.column_names == ["frame_id", "channel", "timestamp", "distance"] and table.num_rows == 5
    assert table["frame_id"][0].as_py() == first and table["distance"][0].as_py() == pytest.approx(0, abs=1e-6)
    assert rows == [(MODEL, "FLOAT[128]", frames, frames)]
    shards = sorted(storage.table_dir("embeddings").glob("channel=*/date=*/*.parquet"))
    assert shards and all(pq.read_schema(p).field("vector").type.list_size == 128 for p in shards)


def test_lookalike_top5_are_the_query_persons_frames(root, cli):
    storage, cfg, queries, tmp = root
    hits = 0
    for person, paths in queries.items():
        for path in paths:  # frames of other shots: none of them is in the dataset
            done = cli(storage.root, "lookalike", str(path), "--n", "5", "--format", "json")
            assert done.returncode == 0, done.stderr
            rows = json.loads(done.stdout)
            assert [set(r) >= {"frame_id", "channel", "source_id", "segment_id", "timestamp", "distance"} for r in rows]
            assert _people(rows) == [person] * 5, (path.name, rows)
            assert rows[0]["distance"] < 0.5
            hits += 1
    assert hits == sum(len(p[2]) for p in PEOPLE.values()) == 12
    # someone not in the dataset matches nobody within dlib's same-person threshold
    done = cli(storage.root, "lookalike", str(astronaut_png(tmp)), "--n", "3", "--format", "json")
    assert min(r["distance"] for r in json.loads(done.stdout)) > 0.6


def test_lookalike_where_sheet_and_the_index_path(root, cli):
    storage, cfg, queries, tmp = root
    query = queries["roxanne"][0]
    done = cli(storage.root, "lookalike", str(query), "--n", "3", "--where", "source_id = 'hal.mp4'",
               "--format", "json", "--out", str(tmp / "sheet.png"))
    assert done.returncode == 0, done.stderr
    assert _people(json.loads(done.stdout)) == ["hal"] * 3  # the filter wins over the likeness
    assert (tmp / "sheet.png").stat().st_size > 1000
    exact = json.loads(cli(storage.root, "lookalike", str(query), "--n", "6", "--format", "json",
                           "--index", "off").stdout)
    indexed = cli(storage.root, "lookalike", str(query), "--n", "6", "--format", "json", "--index", "on")
    assert indexed.returncode == 0, indexed.stderr
    assert [r["frame_id"] for r in json.loads(indexed.stdout)] == [r["frame_id"] for r in exact]
    assert (storage.root / "dataset/_index" / f"{MODEL}.faiss").exists()
    table = cli(storage.root, "lookalike", str(query), "--n", "2")
    assert table.returncode == 0 and "exact" in table.stdout and "roxanne.mp4" in table.stdout


def test_bad_input_is_one_line_and_exit_2(root, cli, tmp_path):
    storage, *_ = root
    (tmp_path / "text.png").write_text("not an image")
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    for args, message in [((str(tmp_path / "nope.png"),), "no such image file"),
                          ((str(tmp_path / "text.png"),), "not an image"),
                          ((str(blank),), "no face found"),
                          ((str(PEOPLE_QUERY(root)), "--where", "nope = 1"), "--where"),
                          ((str(PEOPLE_QUERY(root)), "--where", "1; DROP TABLE x"), "--where")]:
        done = cli(storage.root, "lookalike", *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, lines)


def PEOPLE_QUERY(root):
    return root[2]["carphone"][0]


def test_embed_backfills_what_processing_did_not_embed(root, cli, tmp_path):
    storage, cfg, queries, tmp = root
    # the same footage processed without embeddings, into a root of its own
    config = tmp_path / "stream2dataset.yaml"
    settings = yaml.safe_load((tmp / "stream2dataset.yaml").read_text())
    settings["processing"].update(embeddings=False, outputs=["aligned_face", "face"])
    config.write_text(yaml.safe_dump(settings))
    cfg2 = load_config(config)
    process_inline(cfg2, file_segments([tmp / "videos" / "hal.mp4"]))
    store = Storage.of(cfg2)
    assert not list(store.table_dir("embeddings").glob("*/*/*.parquet")) if store.table_dir("embeddings").exists() else True
    done = cli(store.root, "embed")
    assert done.returncode == 0, done.stderr
    with open_catalog(store.root) as con:
        kinds = dict(con.execute("SELECT kind, count(*) FROM embeddings JOIN frames_all USING (frame_id) "
                                 "GROUP BY kind").fetchall())
        crops = dict(con.execute("SELECT kind, count(*) FROM frames_all GROUP BY kind").fetchall())
    assert kinds == crops and kinds["face"] > 5
    again = embed_dataset(store, cfg2.processing)
    assert again["embedded"] == 0 and again["already"] == sum(crops.values())
    # `face` crops embed as the same person: Hal's face crops lie near Hal's aligned crops
    hit = cli(store.root, "lookalike", str(queries["hal"][0]), "--n", "4", "--where", "kind = 'face'", "--format", "json")
    assert [r["distance"] < 0.6 for r in json.loads(hit.stdout)] == [True] * 4


def test_snapshots_pin_the_embeddings_of_their_frames(root):
    storage, *_ = root
    create_snapshot(storage, "hal-only", "source_id = 'hal.mp4'")
    manifest = json.loads((storage.snapshots_dir / "hal-only.json").read_text())
    assert manifest["files"]["embeddings"]
    con = open_snapshot(storage, "hal-only")
    try:
        n_frames = con.execute("SELECT count(*) FROM frames_all").fetchall()[0][0]
        n_emb, typ = con.execute("SELECT count(*), any_value(typeof(vector)) FROM embeddings").fetchall()[0]
    finally:
        con.close()
    assert n_emb == n_frames > 0 and typ == "FLOAT[128]"


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(a, b) < 0.3
    assert frechet_distance(a, a + 1.0) == pytest.approx(8)  # |mu_a - mu_b|^2, the same spread
    with pytest.raises(ValueError):
        frechet_distance(a[:1], b)


# a tiny diffusion model trained here on the CPU, on the snapshot's real aligned faces ------------------

@pytest.fixture(scope="module")
def face_run(root):
    storage, cfg, queries, tmp = root
    create_snapshot(storage, "faces")
    tcfg = TrainingConfig.model_validate(TINY)
    con = open_snapshot(storage, "faces")
    try:
        rows = con.execute("SELECT frame_id, image FROM frames ORDER BY frame_id").fetchall()
    finally:
        con.close()
    images = to_unit(torch.from_numpy(np.stack([decode_image(r[1], 32) for r in rows])).permute(0, 3, 1, 2).float())
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        task = TASKS["diffusion"](tcfg, ["lookalike"])
        unet, sched = task.model, build_scheduler(tcfg.diffusion)
        opt = torch.optim.Adam(unet.parameters(), lr=2e-3)
        gen = torch.Generator().manual_seed(0)
        for _ in range(150):
            loss = diffusion_loss(unet, sched, images[torch.randint(0, len(images), (8,), generator=gen)], generator=gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    folder = storage.runs_dir / "faces-tiny"
    write_run_info(folder, "diffusion", {"name": "faces", "rows": len(rows), "channels": ["lookalike"]}, tcfg)
    (folder / "checkpoint-0000150").mkdir(parents=True)
    torch.save({"step": 150, "kind": "diffusion", "model": unet.state_dict(), "ema": unet.state_dict(),
                "config": tcfg.model_dump(mode="json"), "snapshot": {"name": "faces"}},
               folder / "checkpoint-0000150" / "state.pt")
    return unet.eval(), tcfg, images, [r[0] for r in rows]


def test_ddim_inversion_reconstructs_a_training_face(face_run):
    unet, tcfg, images, _ = face_run
    x = images[:4]
    z = ddim_invert(unet, tcfg.diffusion, x)
    back = to_uint8(ddim_sample(unet, tcfg.diffusion, 4, generator=None, latents=z, clip=False))
    rmse = np.sqrt(np.mean((back.astype(float) - to_uint8(x).astype(float)) ** 2))
    noise = to_uint8(ddim_sample(unet, tcfg.diffusion, 4, generator=torch.Generator().manual_seed(0)))
    unrelated = np.sqrt(np.mean((noise.astype(float) - to_uint8(x).astype(float)) ** 2))
    assert rmse < 12 and rmse < unrelated / 3, (rmse, unrelated)  # bench/RESULTS.md states the figure


def test_sample_morph_between_a_frame_id_and_a_photo(root, face_run, cli):
    storage, cfg, queries, tmp = root
    _, _, _, ids = face_run
    out = tmp / "morph.mp4"
    done = cli(storage.root, "sample", "diffusion", "--run", "faces-tiny", "--morph", ids[0], str(queries["hal"][1]),
               "--frames", "12", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "reconstruction RMSE" in done.stdout
    rmse = [float(v.rstrip(",")) for v in done.stdout.split("A ")[-1].replace("B ", "").split()[:2]]
    assert all(r < 20 for r in rmse), done.stdout
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) >= 12 + 2
    with open_catalog(storage.root) as con:
        image = con.execute("SELECT image FROM frames WHERE frame_id = ?", [ids[0]]).fetchall()[0][0]
    first = decode_image(image, frames[0].shape[0])
    assert np.sqrt(np.mean((frames[0].astype(float) - first) ** 2)) < 12  # it opens on the real face A
    from stream2dataset.training.morph import DISPLAY, _snapshot_look, _square, load_face

    kind, chain = _snapshot_look(storage, "faces")
    photo_b = _square(load_face(storage, cfg, str(queries["hal"][1]), kind, chain)[0], DISPLAY)
    assert np.sqrt(np.mean((frames[-1].astype(float) - photo_b) ** 2)) < 12  # ... and ends on the photo of B
    emb = FaceEmbedder()
    last, a, b = emb.embed([frames[-1], first.astype(np.uint8), photo_b], "aligned_face")
    assert np.linalg.norm(last - b) < np.linalg.norm(last - a)
    bad = cli(storage.root, "sample", "diffusion", "--run", "faces-tiny", "--morph", ids[0], "nope")
    assert bad.returncode == 2 and "neither an image file nor a frame id" in bad.stderr


def test_sample_prints_and_logs_the_face_quality(root, face_run, cli):
    storage, *_ = root
    done = cli(storage.root, "sample", "diffusion", "--run", "faces-tiny", "--n", "8", "--no-memorisation")
    assert done.returncode == 0, done.stderr
    assert "face quality: Fréchet distance" in done.stdout
    logged = [json.loads(line) for line in (storage.runs_dir / "faces-tiny" / "face_quality.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 150 and logged[-1]["frechet"] > 0 and logged[-1]["generated"] == 8
