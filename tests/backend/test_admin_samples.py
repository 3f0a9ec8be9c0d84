"""A strategy that scores the disagreement of samples the model cannot give (BALD with a committee of 1,
MC dropout with one sample or no dropout) is refused by the admin API with what to change (issue 17)."""

from __future__ import annotations

import pytest

LOGISTIC_1 = {"name": "logistic", "params": {"committee": 1}}


@pytest.mark.parametrize(("patch", "words"), [
    ({"strategy": {"name": "bald"}, "model": LOGISTIC_1}, ["'bald'", "committee=1", "committee to 2 or more"]),
    ({"strategy": {"name": "mc_variance"}, "model": {"name": "cnn", "params": {"mc_samples": 1}}},
     ["'mc_variance'", "mc_samples to 2 or more"]),
    ({"strategy": {"name": "vote_entropy"}, "model": {"name": "cnn", "params": {"dropout": 0}}},
     ["dropout=0", "dropout above 0"]),
    ({"strategy": {"name": "class_balanced", "params": {"base": {"name": "batchbald"}}}, "model": LOGISTIC_1},
     ["'batchbald' (inside 'class_balanced')", "committee"]),
    ({"strategy": {"name": "auto", "params": {"warm": {"name": "kl_consensus"}}}, "model": LOGISTIC_1},
     ["'kl_consensus' (inside 'auto')"]),
])
def test_patch_refuses_a_sampling_strategy_whose_model_gives_one_sample(client, auth, patch, words):
    client.patch("/admin/projects/3/settings", json={"strategy": {"name": "margin"}}, headers=auth)
    response = client.patch("/admin/projects/3/settings", json=patch, headers=auth)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    for word in [*words, "every score would be 0", "needs no samples"]:
        assert word in detail, (word, detail)
    assert client.get("/admin/projects/3/settings", headers=auth).json()["strategy"]["name"] == "margin"


def test_strategy_switch_refuses_bald_on_a_committee_of_one_and_accepts_two(client, auth):
    assert client.patch("/admin/projects/4/settings", json={"model": LOGISTIC_1}, headers=auth).status_code == 200
    refused = client.post("/admin/projects/4/strategy", json={"name": "bald"}, headers=auth)
    assert refused.status_code == 422 and "committee to 2 or more (default 8)" in refused.json()["detail"]
    assert "margin" in refused.json()["detail"]  # a strategy this model can serve
    also = client.post("/admin/projects/4/strategy", json={"name": "bald", "params": {"committee": 1}}, headers=auth)
    assert also.status_code == 422
    ok = client.post("/admin/projects/4/strategy", json={"name": "bald", "params": {"committee": 2}}, headers=auth)
    assert ok.status_code == 200, ok.text
    assert ok.json()["settings"]["model"]["params"]["committee"] == 2
    # and the model cannot be changed under the strategy either
    back = client.patch("/admin/projects/4/settings", json={"model": LOGISTIC_1}, headers=auth)
    assert back.status_code == 422 and "'bald'" in back.json()["detail"]


def test_a_strategy_without_samples_still_takes_a_committee_of_one(client, auth):
    ok = client.patch("/admin/projects/5/settings", json={"strategy": {"name": "margin"}, "model": LOGISTIC_1},
                      headers=auth)
    assert ok.status_code == 200, ok.text
