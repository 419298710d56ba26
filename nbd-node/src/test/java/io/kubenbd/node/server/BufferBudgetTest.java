package io.kubenbd.node.server;

import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/** The server-wide byte budget: who gets bytes, who waits, and in which order waiters are served. */
class BufferBudgetTest {
    private static final long MIB = 1 << 20;

    private record Waiting(long wanted, List<String> log, String name) implements BufferBudget.Waiter {
        @Override
        public boolean holdsNothing() {
            return false;
        }

        @Override
        public void granted() {
            log.add(name);
        }
    }

    @Test
    void bytesThatDoNotFitWaitAndAreGrantedInArrivalOrderFirstFit() {
        BufferBudget budget = new BufferBudget(64 * MIB);
        List<String> granted = new ArrayList<>();
        assertThat(budget.tryAcquire(32 * MIB, false)).isTrue(); // a large request: up to half the budget
        assertThat(budget.tryAcquire(budget.charge(32 * MIB), false)).as("a second large one passes half").isFalse();
        assertThat(budget.tryAcquire(MIB, false)).isTrue();

        Waiting large = new Waiting(32 * MIB, granted, "large");
        budget.await(large);
        assertThat(budget.tryAcquire(4096, true)).as("nobody passes waiters on the fast path").isFalse();
        Waiting small = new Waiting(4096, granted, "small");
        budget.await(small);
        assertThat(granted).as("the small one fits behind the large one").containsExactly("small");

        budget.release(32 * MIB);
        assertThat(granted).as("large requests may bring the total to half the budget, no further")
                .containsExactly("small");
        budget.release(MIB);
        budget.release(4096);
        assertThat(granted).containsExactly("small", "large");
        assertThat(budget.used()).isEqualTo(32 * MIB);
    }

    @Test
    void aCancelledWaiterIsNotGrantedAndAGrantedOneCannotBeCancelled() {
        BufferBudget budget = new BufferBudget(8 * MIB);
        List<String> granted = new ArrayList<>();
        assertThat(budget.tryAcquire(6 * MIB, false)).isTrue();
        assertThat(budget.tryAcquire(2 * MIB, true)).as("the reserve is not for 2 MiB").isFalse();
        assertThat(budget.tryAcquire(256 << 10, true)).as("but for a first small request").isTrue();
        assertThat(budget.tryAcquire(MIB, false)).isFalse();
        budget.release(256 << 10);
        Waiting gone = new Waiting(MIB, granted, "gone");
        Waiting kept = new Waiting(MIB, granted, "kept");
        budget.await(gone);
        budget.await(kept);
        assertThat(budget.cancel(gone)).isTrue();
        budget.release(MIB);
        assertThat(granted).containsExactly("kept");
        assertThat(budget.cancel(kept)).as("already granted: it owns its bytes").isFalse();
    }

    @Test
    void aConnectionsShareKeepsRoomForOneMore() {
        BufferBudget budget = new BufferBudget(90 * MIB);
        assertThat(budget.share()).isEqualTo(90 * MIB);
        budget.join();
        budget.join();
        assertThat(budget.share()).isEqualTo(30 * MIB);
        budget.leave();
        assertThat(budget.share()).isEqualTo(45 * MIB);
        assertThat(budget.charge(64 * MIB)).as("no request is charged more than it may take").isEqualTo(45 * MIB);
        assertThat(new BufferBudget(MIB).charge(MIB)).as("three quarters of a tiny budget").isEqualTo(768 << 10);
    }
}
