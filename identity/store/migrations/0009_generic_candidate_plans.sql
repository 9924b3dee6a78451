-- Plan the candidate search once per connection, not once per call.
--
-- register_candidates and usable_keys ran with plan_cache_mode = force_custom_plan (0004,
-- 0005): every call planned its queries again, for the values at hand, because a plan cached
-- while the tables were small (a new index) went on scanning them whole once they had grown.
-- Planning those queries was most of their cost: at 1M records 2.6 ms a registration for the
-- two, against 1.2 ms with the plan made once (10k records: 2.1 against 0.8 ms).
--
-- A cached (generic) plan is safe when the planner can only choose plans that stay good at any
-- size: look-ups through the indexes and nested loops, the plans these queries want at every
-- size above a few hundred records. So the plan is cached and sequential scans, hash joins and
-- merge joins are ruled out inside these two functions (only there: the settings apply while
-- they run). Measured with benchmarks/plan_stability.py (plans cached on empty tables, then
-- 100,000 records and 1,000,000 blocking keys written without ANALYZE, a worst case that
-- autovacuum would soften): per call of both, 1,188-1,349 ms with the plan cached alone,
-- 131-141 ms planned each time (the planner believed the tables empty), 1.8-2.1 ms cached with
-- the rules below. Ruling out sequential scans alone (or with bitmap scans) was not enough:
-- 181-186 ms.
ALTER FUNCTION register_candidates(text[], bigint, integer, integer, integer, integer,
                                   integer, integer)
    SET plan_cache_mode = force_generic_plan
    SET enable_seqscan = off
    SET enable_hashjoin = off
    SET enable_mergejoin = off;

ALTER FUNCTION usable_keys(text[], bigint[], integer)
    SET plan_cache_mode = force_generic_plan
    SET enable_seqscan = off
    SET enable_hashjoin = off
    SET enable_mergejoin = off;
