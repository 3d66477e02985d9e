-- Sales and stock per hour (UTC): the hourly bucket of `sales`, whose columns are these (but `bucket`).
SELECT
  * EXCEPT (bucket)
FROM `${project}.${dataset}.sales`
WHERE bucket = 'hour'
