-- The extension's table as release 1.0 created it.
CREATE TABLE ue_user_email (
  ue_id INTEGER NOT NULL PRIMARY KEY,
  ue_user INTEGER NOT NULL,
  ue_email TEXT NOT NULL
);
