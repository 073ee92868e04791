/** How the edge judges an agent alive, and what a connection may cost it in useless frames. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AGENT_PING_MS, AGENT_SILENT_MS, EDGE_SILENT_MS } from '../../shared/protocol/liveness.ts';
import { BAD_FRAME_BURST, BAD_FRAMES_PER_SECOND, FrameBudget } from '../../worker/tunnel/frame-budget.ts';
import { AgentLiveness, isSilent } from '../../worker/tunnel/liveness.ts';

test('the bounds fit together: the edge drops an agent after three missed pings, the agent waits longer for the edge', () => {
  assert.equal(AGENT_SILENT_MS, 3 * AGENT_PING_MS);
  assert.ok(EDGE_SILENT_MS > AGENT_SILENT_MS);
});

test('an agent is silent only past the bound; agents without an instance id (older ones) get the old 45 s bound', () => {
  const hello = { instanceId: 'i-1' };
  assert.equal(isSilent(0, AGENT_SILENT_MS, hello), false);
  assert.equal(isSilent(0, AGENT_SILENT_MS + 1, hello), true);
  assert.equal(isSilent(0, 30_000, {}), false);
  assert.equal(isSilent(0, 45_001, {}), true);
});

test('the edge pings a connection at most once per ping interval, each connection on its own clock', () => {
  const l = new AgentLiveness();
  const t0 = 1_000_000;
  assert.equal(l.pingDue('a', t0), true);
  assert.equal(l.pingDue('a', t0 + AGENT_PING_MS - 1), false);
  assert.equal(l.pingDue('b', t0 + 1), true);
  assert.equal(l.pingDue('a', t0 + AGENT_PING_MS), true);
  l.heard('a', t0 + 5);
  assert.equal(l.lastHeard('a'), t0 + 5);
  l.forget('a');
  assert.equal(l.lastHeard('a'), 0);
  assert.equal(l.pingDue('a', t0 + AGENT_PING_MS + 1), true, 'a forgotten connection starts afresh');
  l.discarding(t0 + 9);
  assert.equal(l.caughtUpAt, t0 + 9);
});

test('a burst of bad frames is allowed, then the budget refills at its rate; a connection that spends it is cut off', () => {
  const budget = new FrameBudget();
  const t0 = 5_000;
  let allowed = 0;
  while (budget.charge('c', t0)) allowed++;
  assert.equal(allowed, BAD_FRAME_BURST, 'the whole burst at one instant, not one more');
  assert.equal(budget.charge('c', t0 + 5), false, 'no refill within a few ms');
  // One second later the bucket holds BAD_FRAMES_PER_SECOND tokens minus the one overdrawn above.
  let refilled = 0;
  while (budget.charge('c', t0 + 1005)) refilled++;
  assert.ok(refilled >= BAD_FRAMES_PER_SECOND - 3 && refilled <= BAD_FRAMES_PER_SECOND, `${refilled} after a second`);
  assert.equal(budget.charge('other', t0), true, 'another connection has its own budget');
  assert.equal(budget.isCutOff('c'), false);
  budget.cutOff('c', t0);
  assert.equal(budget.isCutOff('c'), true);
  budget.forget('c');
  assert.equal(budget.isCutOff('c'), false);
});

test('an unknown request id gets one cancel per connection, however often it comes back', () => {
  const budget = new FrameBudget();
  assert.equal(budget.firstSighting('c', 'r1', 0), true);
  assert.equal(budget.firstSighting('c', 'r1', 1), false);
  assert.equal(budget.firstSighting('d', 'r1', 1), true);
  // The memory is bounded: after 1024 other ids the oldest is forgotten and would be cancelled again.
  for (let i = 0; i < 1024; i++) budget.firstSighting('c', `x${i}`, 2);
  assert.equal(budget.firstSighting('c', 'r1', 3), true);
});

test('a busy hub whose own tick is overdue was stopped itself: silence counts from when it runs again; an idle hub is judged as before', () => {
  const l = new AgentLiveness();
  const t0 = 1_000_000;
  l.ticked(t0, true);
  l.checkAwake(t0 + 250);
  assert.equal(l.caughtUpAt, 0, 'a tick on time changes nothing');
  l.ticked(t0 + 250, true);
  // Stopped for 8 s (SIGSTOP, a laptop asleep): the first look afterwards moves the start of silence to now.
  l.checkAwake(t0 + 8250);
  assert.equal(l.caughtUpAt, t0 + 8250);
  assert.equal(isSilent(Math.max(t0, l.caughtUpAt), t0 + 8300, { instanceId: 'i' }), false);
  // Idle (nothing in flight, so no tick): a long gap between looks is no freeze, and a hung agent is still found.
  const idle = new AgentLiveness();
  idle.ticked(t0, false);
  idle.checkAwake(t0 + 60_000);
  assert.equal(idle.caughtUpAt, 0);
});
