package io.kubenbd.node.csi;

import io.grpc.Status;
import io.grpc.StatusException;
import org.junit.jupiter.api.Test;

import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatCode;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class PublishedNodeTest {

    @Test
    void aVolumePublishedToAnotherNodeIsRefusedNamingBothNodes() {
        assertThatThrownBy(() -> PublishedNode.requireThisNode(Map.of("kubenbd.io/node", "node-a"), "node-b", "apps/disk"))
                .isInstanceOfSatisfying(StatusException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
                    assertThat(e.getStatus().getDescription())
                            .startsWith("volume apps/disk was published to node node-a, not to this node node-b");
                });
    }

    @Test
    void aVolumePublishedHereOrWithoutAControllerPasses() {
        assertThatCode(() -> PublishedNode.requireThisNode(Map.of("kubenbd.io/node", "node-b"), "node-b", "apps/disk"))
                .doesNotThrowAnyException();
        assertThatCode(() -> PublishedNode.requireThisNode(Map.of(), "node-b", "apps/disk")).doesNotThrowAnyException();
    }
}
