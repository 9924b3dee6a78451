-- Demographic search by family name (prefix, as FHIR's `family` and PDQ's `*` are) and birth
-- date (ITI-78, ITI-21). With an index on the family name alone, a common name at 1M records
-- meant reading every record of that name from the heap to test its birth date: HAYES* +
-- 2012-10-17 read 1,884 rows and 1,684 pages for one hit (11 ms). Leading with the birth date,
-- the index holds both conditions: the equality, then the name's range, a few pages (0.1 ms).
-- The index on the birth date alone is replaced: this one serves every query it served.
CREATE INDEX source_record_birth_family ON source_record (birth_date, family_norm);
DROP INDEX source_record_birth_date;

-- The planner must also know that a name prefix is not rare. With the default statistics
-- (100 most common values, 100 histogram buckets) a range such as SPENCE..SPENCF (1,586
-- records at 1M) fell inside one bucket and was estimated at 1 row, so the name index won the
-- tie against the one above and the plan read every SPENCE. A thousand values (about 3,600
-- family names in the synthetic 1M index) estimate it within a few percent.
ALTER TABLE source_record ALTER COLUMN family_norm SET STATISTICS 1000;
ALTER TABLE source_record ALTER COLUMN given_norm SET STATISTICS 1000;
ANALYZE source_record;
