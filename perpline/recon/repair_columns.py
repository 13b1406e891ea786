"""The columns of `recon_repairs`, in one place: the reconciler writes them (perpline.recon.repairs),
the audit reads them (perpline.audit), the API documents them (perpline.api.models.RepairRecord,
held to this list by tests/unit/test_api_response_models.py)."""

from __future__ import annotations

STORED = ("repair_id", "rule", "asset", "account_id", "symbol", "journal_id", "ref_type", "break_detail", "action",
          "policy", "status", "actor", "journal_ids", "voided", "instructions", "proposed_ms", "applied_ms",
          "confirmed_ms", "recheck", "updated_ms")
SHOWN = STORED[:-1]  # updated_ms only orders the versions of one repair's row (ReplacingMergeTree)
