-- The extension's table as release 1.0 created it.
CREATE TABLE ue_user_email (
  ue_id BIGINT NOT NULL PRIMARY KEY,
  ue_user BIGINT NOT NULL,
  ue_email TEXT NOT NULL
);
