"""Helpers for the tools' tests (eval_smoothness.py, critic_geometry.py, plot_qfield.py): unusable checkpoint paths of
every kind, a snapshot of an output folder (a refused command must leave an earlier report byte for byte as it was), and
the texts of the figures a tool saves."""

from pathlib import Path

import matplotlib.figure
import matplotlib.text
import torch

BAD_CASES = ("missing", "directory without checkpoints", "corrupt", "foreign")


def bad_checkpoint(case, folder, good):
    """(path, the message its error line gives after "<path>: ") for one kind of unusable checkpoint path, made in
    `folder` from the good checkpoint file `good`."""
    folder.mkdir(parents=True, exist_ok=True)
    if case == "missing":
        return folder / "missing.pt", "no such file"
    if case == "directory without checkpoints":
        (folder / "empty").mkdir()
        (folder / "empty" / "notes.txt").write_text("not a checkpoint\n")
        return folder / "empty", "a directory holding no checkpoint files (*.pt)"
    if case == "corrupt":  # a copy cut short, as an interrupted transfer leaves it
        data = Path(good).read_bytes()
        (folder / "corrupt.pt").write_bytes(data[: len(data) // 2])
        return folder / "corrupt.pt", ("not a torch checkpoint (torch.save writes a zip archive; this file is not "
                                       "one, or is damaged)")
    if case == "foreign":  # a torch file, but not one of ours
        torch.save({"weights": torch.zeros(3)}, folder / "foreign.pt")
        return folder / "foreign.pt", "not a checkpoint of this project (expected format 'pave-checkpoint/1')"
    raise ValueError(case)


def old_report(folder, names):
    """Files `names` in `folder` with content no tool writes: an earlier report. Returns its snapshot."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(f"earlier {name}\n".encode() + bytes(range(256)))
    return snapshot(folder)


def snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(Path(folder).rglob("*"))
            if path.is_file()}


def figure_texts(monkeypatch):
    """A list that collects, from now to the test's end, the texts of every figure saved (titles, labels, legend
    entries), one list per figure."""
    texts, savefig = [], matplotlib.figure.Figure.savefig

    def spy(fig, *args, **kwargs):
        texts.append([t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()])
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    return texts
