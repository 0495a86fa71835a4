-- The extension's table as release 1.0 created it.
CREATE TABLE ue_user_email (
  ue_id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  ue_user BIGINT UNSIGNED NOT NULL,
  ue_email VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
) ENGINE=InnoDB;
