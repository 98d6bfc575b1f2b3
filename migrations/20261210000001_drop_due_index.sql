-- The pending jobs' one index is `outbox (subscription_id, due_at, id) WHERE state = 'pending'`: the claim walks
-- it subscription by subscription, and the earliest due job is the earliest of each subscription's first entry.
-- A second index of the same rows in due order cost two more index entries per delivery (one when it is spread,
-- one when it is claimed) and is no longer read.
DROP INDEX outbox_due_idx;
