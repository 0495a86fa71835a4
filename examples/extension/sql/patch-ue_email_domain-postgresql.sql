-- 1.1.0, the expand phase: a nullable column that new code writes and backfilld fills for the existing rows.
ALTER TABLE ue_user_email ADD COLUMN ue_email_domain TEXT;
