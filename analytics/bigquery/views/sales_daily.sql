-- Sales and stock per day (UTC): the daily bucket of `sales`, whose columns are these (but `bucket`).
SELECT
  * EXCEPT (bucket)
FROM `${project}.${dataset}.sales`
WHERE bucket = 'day'
