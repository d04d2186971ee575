"""The command line's words: library messages rewritten for a terminal user, one line each."""
from __future__ import annotations

import re

__all__ = ["one_line_warning", "cli_words", "CLI_PHRASES"]


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    text = str(message)
    if issubclass(category, Warning) and "integral is probably divergent" in text:
        text = "scipy could not converge a p-value integral (a very large test statistic): that p-value is approximate"
    return f"warning: {cli_words(text)}\n"


# Library phrases -> the command line's words, for errors and warnings printed by the CLI.
CLI_PHRASES = (
    (re.compile(r"\bweights='auto', 'imagenet', 'random' or an existing file"),
     "--weights auto|imagenet|random or an existing file"),
    (re.compile(r"with fit_cam_regression\(model, images, layer\) and pass cam_weights=\.\.\. \(CLI: ([^)]*)\)"),
     r"with \1"),
    (re.compile(r"fit them with fit_cam_regression\([^)]*\)"), "fit them with --cam-fit-images N"),
    (re.compile(r"[\w.]+(?:\([^()]*\))?(?:=(?:'[^']*'|\S+))?\s*\(CLI: ([^)]*)\)"), r"\1"),
    (re.compile(r"\(CLI: ([^)]*)\)"), r"(\1)"),
    (re.compile(r"list them with model\.named_modules\(\)"), "list the aliases with `python cli.py layers`"),
    (re.compile(r"\bOSIEDataset\(root\)"), "--data-root"),
    (re.compile(r"\bweights='([\w-]+)'"), r"--weights \1"),
    (re.compile(r"\bdevice='(\w+)'"), r"--device \1"),
    (re.compile(r"\bon_missing='(\w+)'"), r"--on-missing \1"),
    (re.compile(r"\bregions='(\w+)'"), r"--regions \1"),
    (re.compile(r"\b(image_size|batch_size|max_images|top_k|n_per_dimension)\b(?= must)"),
     lambda m: "--" + m.group(1).replace("_", "-")),
)


def cli_words(message: str) -> str:
    """A library message in the command line's words, on one line: ``weights='random'`` becomes
    ``--weights random``, ``x (CLI: --flag)`` becomes ``--flag``; a multi-line message keeps its
    first line (torch's 7-line unpickling advice is not the user's fix)."""
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    text = lines[0] if lines else str(message)
    if len(lines) > 1 and text.endswith(":"):
        text = text.rstrip(":")
    for pattern, replacement in CLI_PHRASES:
        text = pattern.sub(replacement, text)
    if text.startswith("could not read weights file "):
        text += ("; --weights takes imagenet, random, auto, or a file saved with torch.save "
                 "(a state dict, or dissect.models.save_checkpoint)")
    return text
