-- Trigger function (migration 0014): fills a review item's hard_rules (the rules that fired
-- on the pair, from its explanation) and domain_ids (the source domains of its record and
-- other record) when it is opened, whichever path opens it.
CREATE OR REPLACE FUNCTION review_item_fill() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.hard_rules := ARRAY(
        SELECT jsonb_array_elements_text(NEW.explanation -> 'decision' -> 'hard_rules')
        WHERE jsonb_typeof(NEW.explanation -> 'decision' -> 'hard_rules') = 'array');
    NEW.domain_ids := ARRAY(
        SELECT DISTINCT r.domain_id FROM source_record r
        WHERE r.id = NEW.record_id OR r.id = NEW.other_record_id ORDER BY 1);
    RETURN NEW;
END;
$$;
