"""Where units of work run, one idiom for every command: a worker is built from an explicit, picklable spec (its
`build()` returns the function that does one unit), and a backend maps it over units, giving (key, result) pairs as
they finish. `processes` runs them here or in spawned local processes; `ray_cluster` as Ray tasks, which also runs
an Optuna study's trials one task each. `harkd run`, `search-head` and `search-sensors` all go through them."""
