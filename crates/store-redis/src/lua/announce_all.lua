-- KEYS: [bus sequence]. ARGV: now. Announces that every user's cached sessions may be stale (an
-- import from another store changed users or sessions).
announce(KEYS[1], '*', ARGV[1])
return 1
