"""``fxai-compat audit``: find a code base's legacy callbacks and say what migrating each one takes.

Usage::

    fxai-compat audit TARGET [--config FILE ...] [--json]

``TARGET`` is a module or package name (``legacy_callbacks``, ``mypkg.callbacks``), a folder, or a
``.py`` file: a user's own callback code. Every ``.py`` file under it is read with ``ast``; every
file is also imported (its module name follows its package folders), each one separately, so a file
that fails to import is reported with its error and still checked statically. While importing, the
folder that holds the top package is put on ``sys.path`` and the code's own output goes to stderr.

A *legacy callback class* is a subclass of ``legacy_callbacks.BaseCallback`` or any class with one of
the 16 legacy event methods (``on_`` + event), inherited or its own. ``BaseCallback`` itself is left
out. One report per class:

- **events**: the events the class defines (its own or inherited from its bases; ``BaseCallback``'s
  no-ops and methods set to ``None`` do not count, as for the adapter), each with the Lightning hook
  or RL-protocol event that delivers it (``fxai_compat.events.EVENT_MAP``);
- **signature problems**: ``legacy_callbacks.bind_event`` run on a stand-in object that carries only
  the class's function (no instance is created, ``__init__`` never runs): the very check, and the
  very ``CallbackSignatureError`` message, that ``LegacyCallbackAdapter`` gives at wrap time. A file
  that does not import is checked the same way, with a function rebuilt from the ``def`` line;
- **trainer uses**: ``trainer.<attr>`` (also ``kwargs["trainer"].<attr>`` and
  ``getattr(trainer, "<attr>")``) inside the event methods, found with ``ast``, against the
  contract's trainer surface (``legacy_callbacks.TRAINER_SURFACE``);
- **port**: the ``fxai_compat.toggle.REGISTRY`` entries whose ``legacy`` is this class (ports that the
  target registers when imported count too);
- **impl**: with ``--config`` (repeatable), what each run file selects for the class: its
  ``callbacks`` entries resolved with ``toggle.resolve_impls`` (so ``FXAI_CALLBACK_IMPL`` applies,
  as for ``fxai-compat train``);
- **verdict**: ``ready``, ``needs attention: <reasons>`` (adapts, but something needs a look:
  trainer attributes outside the surface, an ``async`` event method, a file that did not import,
  no events at all) or ``cannot adapt: <reasons>`` (the adapter would refuse it: a signature no
  event can fill, an event attribute that is not callable, a Lightning callback).

Exit status: 0 when every class can be adapted, 1 when at least one cannot, 2 for a user error (a
target that is no file, folder or importable module; an unreadable run file), with one line on
stderr.

JSON (``--json``; one object on stdout; ``schema`` is 1)::

    {
      "schema": 1,
      "target": str,                    # as given
      "kind": "module" | "package" | "folder" | "file",
      "configs": [str],                 # the --config files, in order
      "files": [{
          "path": str, "module": str | null,
          "imported": bool,             # false: import failed, classes checked statically only
          "error": str | null,          # "ModuleNotFoundError: No module named 'x'" or a SyntaxError
          "error_line": int | null,     # the line of this file the error came from, when known
          "classes": int                # legacy callback classes found in the file
      }],
      "classes": [{
          "name": str, "qualname": str, "module": str | null, "file": str, "line": int | null,
          "kind": "subclass" | "duck-typed",   # subclass of legacy_callbacks.BaseCallback, or not
          "analysis": "imported" | "static",
          "bases": [str],
          "events": [{
              "event": str,                     # on_episode_end
              "defined_in": str,                # module.Qualname of the class that defines it
              "line": int | null,
              "source_kind": "rl" | "lightning" | "checkpoint_io",   # EVENT_MAP row
              "source": str,                    # episode_end / on_train_epoch_end / save
              "maps_to": str,                   # "RL event episode_end", "Lightning on_train_epoch_end", ...
              "signature": str | null,          # (self, trainer, metrics)
              "receives": [str],                # offered arguments passed to it
              "wants_all": bool,                # it takes **kwargs: receives every offered argument
              "error": str | null               # the CallbackSignatureError / TypeError message
          }],
          "signature_problems": [str],
          "trainer_uses": [{"attr": str, "event": str, "line": int | null, "in_surface": bool}],
          "outside_surface": [str],             # sorted attribute names
          "port": {"name": str, "native": str | null} | null,   # native: "module:attr", or null (no port yet)
          "ports": [{"name": str, "native": str | null}],       # every registered pair with this legacy class
          "selected_by": [{"config": str, "entry": str, "impl": "legacy" | "native" | "shadow",
                           "source": "default" | "config" | "FXAI_CALLBACK_IMPL", "enabled": bool}],
          "legacy_selected": bool | null,       # some enabled entry runs the legacy class (legacy or shadow);
                                                # null without --config
          "verdict": "ready" | "needs attention" | "cannot adapt",
          "reasons": [str],
          "verdict_text": str,                  # "needs attention: ..." as printed
          "notes": [str]
      }],
      "warnings": [str],                        # e.g. a config entry that names no registered port
      "summary": {"files": int, "import_errors": int, "classes": int, "ready": int,
                  "needs_attention": int, "cannot_adapt": int},
      "exit_code": 0 | 1
    }

The event-mapping table of ``migration_guide.md`` is generated here too
(:func:`render_event_map_markdown`, :func:`render_departures_markdown`; :func:`sync_guide` rewrites
the guide's generated blocks).

The package's modules: :mod:`.scanning` (finding the files, reading and importing them),
:mod:`.classifying` (each class's events, signatures, trainer uses, ports and verdict: :func:`audit`),
:mod:`.reporting` (the report objects, text and JSON, the guide's tables) and :mod:`.command`
(``fxai-compat audit``, ``python -m fxai_compat.audit``). The names below stay importable from here.
"""

from __future__ import annotations

from .classifying import audit
from .command import add_parser, main, run_command
from .reporting import (CANNOT_ADAPT, NEEDS_ATTENTION, READY, SCHEMA_VERSION, AuditReport, ClassReport,
                        EventReport, FileReport, describe_source, generated_block, render_departures_markdown,
                        render_event_map_markdown, render_json, render_text, sync_guide)

__all__ = ["audit", "AuditReport", "ClassReport", "EventReport", "FileReport", "render_text", "render_json",
           "render_event_map_markdown", "render_departures_markdown", "sync_guide", "add_parser", "main",
           "READY", "NEEDS_ATTENTION", "CANNOT_ADAPT", "SCHEMA_VERSION"]
