-- The review queue's `uncertain` sort (docs/steward.md, *Queue*): the open items whose
-- probability is closest to 0.5 first (the smallest |logit|, the labels that teach the model
-- most), the items without a probability last, ties oldest first. One index range, read in
-- order, for the first page and for a page after a cursor (keyset paging), as for the other
-- sorts; the expression is identity.store.steward.UNCERTAINTY's, which the planner matches.
CREATE INDEX review_item_open_uncertain ON review_item
    ((coalesce(abs(score - 0.5), 'Infinity'::double precision)), created_at, id)
    WHERE status = 'open';
