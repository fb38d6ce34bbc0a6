from dwarf import Graph, END, TestProxy

async def test_smoke(make_engine):
    proxy = TestProxy()
    g = Graph("g")
    g.add_task("A", "a")
    g.add_task("B", "b")
    g.add_transition_chain("A", "B", END)
    proxy.handle_graph("g", g)
    async def a(flow): flow.set("x", 1)
    def b(flow): flow.set("y", flow.get_int("x") + 1)
    proxy.handle_task("a", a); proxy.handle_task("b", b)
    eng = await make_engine(proxy)
    key, out = await eng.run("g", {}, timeout=5)
    assert out.state == {"x": 1, "y": 2}, out
