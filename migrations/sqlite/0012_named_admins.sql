-- Named admins (issue 20). `actor` is now the name of the admin token that acted (its name
-- in admin.tokens, or "admin" for the single admin.token); `said_by` is the person the
-- caller named in X-Fulfilld-Actor, shown as that caller's word, never as the actor;
-- `request_id` is the request that made the change. Rows made before have both NULL.
ALTER TABLE admin_actions ADD COLUMN said_by TEXT;
ALTER TABLE admin_actions ADD COLUMN request_id TEXT;
CREATE INDEX admin_actions_actor ON admin_actions (actor, id);
CREATE INDEX admin_actions_target ON admin_actions (target, id);
