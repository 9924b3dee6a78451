-- register_insert, as it runs. identity.store.migrate applies this file again whenever its text
-- changes; a new signature or result type, or dropping the function, needs a numbered
-- migration (see identity/store/migrate.py).
-- History: migrations 0002.

-- Step 2 of the registration of a new record: the record, its other identifiers and blocking
-- keys, its person (p_person_id: the person it links to, touched; NULL: a new person), its link
-- and its review items, in one call. Returns what the reply needs and the database assigned.
CREATE OR REPLACE FUNCTION register_insert(
    p_domain_id integer,
    p_identifier text,
    p_demographics jsonb,
    p_normalized jsonb,
    p_search text[],          -- family_norm, given_norm, family_phon, given_phon, birth_date,
                              -- sex, postal_code, city_norm, mothers_maiden_norm
    p_phone_digits text[],
    p_source text,
    p_other_domains integer[],
    p_other_values text[],
    p_other_types text[],
    p_keys text[],
    p_person_id bigint,
    p_link_kind text,
    p_link_score double precision,
    p_link_explanation jsonb,
    p_actor text,
    p_review_others bigint[],
    p_review_persons bigint[],
    p_review_scores double precision[],
    p_review_reasons text[],
    p_review_explanations jsonb    -- a JSON array, one element per review item
) RETURNS TABLE (
    record_id bigint, tx_now timestamptz, others text[],
    person_id bigint, enterprise_id text, person_status text, person_merged_into bigint,
    person_version integer, person_created_at timestamptz, person_updated_at timestamptz,
    review_ids bigint[], review_explanations jsonb
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_record bigint;
    v_person person%ROWTYPE;
    v_review bigint;
    v_review_explanation jsonb;
    v_ids bigint[] := '{}';
    v_explanations jsonb := '[]'::jsonb;
BEGIN
    INSERT INTO source_record (domain_id, identifier, demographics, normalized,
        family_norm, given_norm, family_phon, given_phon, birth_date, sex,
        postal_code, city_norm, phone_digits, mothers_maiden_norm, last_source)
    VALUES (p_domain_id, p_identifier, p_demographics, p_normalized,
        p_search[1], p_search[2], p_search[3], p_search[4], p_search[5], p_search[6],
        p_search[7], p_search[8], p_phone_digits, p_search[9], p_source)
    RETURNING source_record.id INTO v_record;

    IF cardinality(p_other_domains) > 0 THEN
        INSERT INTO record_identifier (source_record_id, domain_id, identifier, type_code)
        SELECT v_record, d, v, t FROM unnest(p_other_domains, p_other_values, p_other_types)
            WITH ORDINALITY AS x(d, v, t, ord)
        ORDER BY ord
        ON CONFLICT DO NOTHING;
    END IF;
    IF cardinality(p_keys) > 0 THEN
        INSERT INTO blocking_key (key, source_record_id)
        SELECT DISTINCT k, v_record FROM unnest(p_keys) AS k;
    END IF;

    IF p_person_id IS NULL THEN
        INSERT INTO person (enterprise_id)
        VALUES (lpad(nextval('enterprise_id_seq')::text, 10, '0'))
        RETURNING * INTO v_person;
    ELSE
        UPDATE person SET version = version + 1, updated_at = now() WHERE id = p_person_id
        RETURNING * INTO v_person;
    END IF;

    INSERT INTO link (source_record_id, person_id, kind, score, explanation, actor)
    VALUES (v_record, v_person.id, p_link_kind, p_link_score, p_link_explanation, p_actor);

    FOR i IN 1 .. coalesce(cardinality(p_review_reasons), 0) LOOP
        v_review := NULL;
        v_review_explanation := NULL;
        INSERT INTO review_item (record_id, other_record_id, person_id, score, reason,
                                 explanation)
        VALUES (v_record, p_review_others[i], p_review_persons[i], p_review_scores[i],
                p_review_reasons[i], p_review_explanations -> (i - 1))
        ON CONFLICT (record_id, coalesce(other_record_id, 0), coalesce(person_id, 0))
            WHERE status = 'open' DO NOTHING
        RETURNING review_item.id, review_item.explanation INTO v_review, v_review_explanation;
        v_ids := v_ids || v_review;
        v_explanations := v_explanations || jsonb_build_array(v_review_explanation);
    END LOOP;

    RETURN QUERY
    SELECT v_record, now(),
           coalesce((SELECT array_agg(ARRAY[ri.domain_id::text, ri.identifier,
                                            coalesce(ri.type_code, '')]
                                      ORDER BY ri.domain_id, ri.identifier)
                     FROM record_identifier ri WHERE ri.source_record_id = v_record), '{}'),
           v_person.id, v_person.enterprise_id, v_person.status, v_person.merged_into,
           v_person.version, v_person.created_at, v_person.updated_at,
           v_ids, v_explanations;
END;
$$;
