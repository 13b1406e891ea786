-- Each journal's place in its account's sequence (1, 2, 3... as the accounts processor wrote them):
-- a gap or a repeat per account is a reconciliation break.
ALTER TABLE ledger_postings ADD COLUMN IF NOT EXISTS account_seq UInt64 DEFAULT 0;
