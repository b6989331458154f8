/*
description: >
  Ordered conversion funnels (Mixpanel semantics), one cohort per day: the funnels are
  defined in assets/funnels.yml and read here as the table funnel_steps (one row per step).
  A step matches an event when the event's type equals step_type and, when given, its event
  name equals step_event and its page_path equals step_path. Entry: a person enters a funnel
  on day D at their FIRST step-1 event dated D (ordered by timestamp, then message_id); at
  most one entry per person, funnel and day. Each day is its own cohort: a person who also
  entered on D-1 enters again on D (their first step-1 event on D), and events can count
  for both entries. From the entry, steps are matched in order, each at the earliest event
  that matches it and comes strictly after the previous step's matched event by (timestamp,
  message_id); other events in between are allowed; a step is counted at most once; later
  step-1 events neither reset nor restart the window. The conversion window is measured from
  the entry event: step k counts only if timestamp - entry timestamp <= conversion_window_days
  * 86400 s (inclusive; exact elapsed seconds, not calendar days). A person reaches step k
  when steps 1..k are all matched. Partition D reads person_events D .. D+14 (14 = the
  largest allowed conversion_window_days, enforced by analytics_pipeline/funnel_definitions.py),
  so cohort D is final only once person_events D+14 is published: rebuild D as later days
  land (until then the counts are those of the days published so far). Every funnel has a
  row for every step every day, also with no entries (persons 0, conversions NULL).
grain: one row per (funnel, cohort_date, step_index)
partitioned: daily
window:
  person_events: [0, 14]
columns:
  funnel: Funnel name (assets/funnels.yml).
  cohort_date: UTC date of the entries (the partition).
  step_index: 1-based step number.
  step: "Step label: the event name for a track step, else the type followed by the path when one is given (e.g. 'page /pricing')."
  persons: Persons of the cohort who reached this step (BIGINT).
  steps: Number of steps of the funnel (step_index = steps is its last step).
  conversion_from_first: persons / persons at step 1 (DOUBLE; NULL when no one entered).
  conversion_from_previous: persons / persons at step_index - 1 (DOUBLE; 1.0 at step 1; NULL when the previous step has 0 persons).
*/
WITH steps AS (
    SELECT
        funnel,
        step_index,
        step_type,
        step_event,
        step_path,
        conversion_window_days,
        coalesce(step_event, step_type || coalesce(' ' || step_path, '')) AS step
    FROM funnel_steps
),
funnel_windows AS (
    SELECT funnel, max(conversion_window_days) AS window_days
    FROM steps
    GROUP BY funnel
),
matches AS (
    -- each event with the steps of each funnel it matches
    SELECT
        s.funnel,
        e.person_id,
        e.timestamp,
        e.message_id,
        e.event_date,
        list(s.step_index ORDER BY s.step_index) AS step_indexes
    FROM person_events AS e
    JOIN steps AS s
        ON e.type = s.step_type
        AND (s.step_event IS NULL OR e.event = s.step_event)
        AND (s.step_path IS NULL OR e.page_path = s.step_path)
    WHERE e.person_id IS NOT NULL
    GROUP BY s.funnel, e.person_id, e.timestamp, e.message_id, e.event_date
),
entries AS (
    SELECT
        funnel,
        person_id,
        min(timestamp) AS entry_at,
        arg_min(message_id, (timestamp, message_id)) AS entry_message_id
    FROM matches
    WHERE event_date = getvariable('partition_date') AND list_contains(step_indexes, 1)
    GROUP BY funnel, person_id
),
depths AS (
    -- scan the entry's candidate events in (timestamp, message_id) order; the number of
    -- steps matched so far advances when an event matches the next step
    SELECT
        n.funnel,
        n.person_id,
        list_reduce(
            list(m.step_indexes ORDER BY m.timestamp, m.message_id),
            lambda reached, step_indexes: reached + CASE WHEN list_contains(step_indexes, reached + 1) THEN 1 ELSE 0 END,
            0
        ) AS reached
    FROM entries AS n
    JOIN funnel_windows AS w ON w.funnel = n.funnel
    JOIN matches AS m
        ON m.funnel = n.funnel
        AND m.person_id = n.person_id
        AND (m.timestamp > n.entry_at OR (m.timestamp = n.entry_at AND m.message_id >= n.entry_message_id))
        AND epoch_us(m.timestamp) - epoch_us(n.entry_at) <= w.window_days * 86400 * 1000000
    GROUP BY n.funnel, n.person_id
),
counts AS (
    SELECT s.funnel, s.step_index, s.step, count(d.person_id) AS persons
    FROM steps AS s
    LEFT JOIN depths AS d ON d.funnel = s.funnel AND d.reached >= s.step_index
    GROUP BY s.funnel, s.step_index, s.step
)
SELECT
    funnel,
    getvariable('partition_date') AS cohort_date,
    step_index,
    step,
    CAST(persons AS BIGINT) AS persons,
    CAST(count(*) OVER (PARTITION BY funnel) AS BIGINT) AS steps,
    CAST(persons AS DOUBLE)
        / nullif(first_value(persons) OVER (PARTITION BY funnel ORDER BY step_index), 0) AS conversion_from_first,
    CAST(persons AS DOUBLE)
        / nullif(coalesce(lag(persons) OVER (PARTITION BY funnel ORDER BY step_index), persons), 0)
        AS conversion_from_previous
FROM counts
ORDER BY funnel, step_index
