"""kube_status reading the API's JSON: the parts the emulator-backed tests do not reach."""

from chalicelib.deploy import kube_status as st


def pod(name: str, created: str | None) -> dict[str, object]:
    meta: dict[str, object] = {"name": name}
    if created is not None:
        meta["creationTimestamp"] = created
    return {"metadata": meta}


def test_newest_is_the_pod_created_last_and_one_without_a_time_the_oldest() -> None:
    pods = [
        pod("b", "2026-12-04T10:00:09Z"),
        pod("c", "2026-12-04T10:00:10Z"),
        pod("none", None),
        pod("a", "2026-12-03T23:59:59Z"),
    ]
    assert st.newest(pods) == pod("c", "2026-12-04T10:00:10Z")
    assert st.newest([pod("none", None), pod("a", "2026-12-03T23:59:59Z")]) == pods[3]
    assert st.newest([]) is None


def test_no_deployment_or_no_revision_label_runs_no_revision() -> None:
    assert st.revision_of(None) is None
    assert st.revision_of({"spec": {"template": {"metadata": {}}}}) is None
    labelled = {"spec": {"template": {"metadata": {"labels": {"instanode.dev/revision": "7"}}}}}
    assert st.revision_of(labelled) == 7
