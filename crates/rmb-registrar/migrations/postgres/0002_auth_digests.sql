-- Digests of the request bodies accepted with the newest X-Auth timestamp (comma
-- separated), so two different updates signed in the same second are both accepted
-- and neither can be replayed.
ALTER TABLE accounts ADD COLUMN last_auth_digests TEXT NOT NULL DEFAULT '';
