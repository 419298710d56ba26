package io.kubenbd.operator.csi;

import io.fabric8.kubernetes.api.model.Event;
import io.fabric8.kubernetes.api.model.NodeBuilder;
import io.fabric8.kubernetes.api.model.PersistentVolume;
import io.fabric8.kubernetes.api.model.PersistentVolumeClaim;
import io.fabric8.kubernetes.api.model.PersistentVolumeClaimBuilder;
import io.fabric8.kubernetes.api.model.Pod;
import io.fabric8.kubernetes.api.model.PodBuilder;
import io.fabric8.kubernetes.api.model.storage.CSIDriver;
import io.fabric8.kubernetes.api.model.storage.CSINodeBuilder;
import io.fabric8.kubernetes.api.model.storage.VolumeAttachment;
import io.fabric8.kubernetes.api.model.storage.VolumeAttachmentBuilder;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.KubernetesClientException;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.shaded.io.netty.channel.EventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollDomainSocketChannel;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.unix.DomainSocketAddress;
import io.kubenbd.node.csi.v1.ControllerGrpc;
import io.kubenbd.node.csi.v1.ControllerPublishVolumeRequest;
import io.kubenbd.node.csi.v1.ControllerUnpublishVolumeRequest;
import io.kubenbd.node.csi.v1.ValidateVolumeCapabilitiesRequest;
import io.kubenbd.node.csi.v1.VolumeCapability;
import io.kubenbd.node.csi.v1.VolumeCapability.AccessMode.Mode;
import io.kubenbd.operator.reconciler.ExportResources;
import io.kubenbd.operator.reconciler.ServerSettings;
import io.kubenbd.operator.runtime.KubeNbdOperator;
import io.kubenbd.operator.runtime.OperatorOptions;
import io.kubenbd.operator.testing.Await;
import io.kubenbd.operator.testing.CsiAttacherProcess;
import io.kubenbd.operator.testing.HelmChart;
import io.kubenbd.operator.testing.KubeTestCluster;
import io.kubenbd.operator.testing.KubeTestClusterExtension;
import io.kubenbd.operator.testing.OperatorTestBed;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import java.util.function.Supplier;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.entry;

/**
 * Single-node read-write end to end through Kubernetes' own machinery: the real external-attacher
 * ({@code csi-attacher}, as the chart runs it beside the operator) against the operator's CSI
 * controller on a unix socket, both acting as the chart's ServiceAccount with only the chart's
 * RBAC, on a real API server. The test plays the attach/detach controller (it creates and deletes
 * the VolumeAttachments it would) and the kubelets (Node and CSINode objects); the operator writes
 * the PersistentVolume from an NbdExport.
 */
@ExtendWith(KubeTestClusterExtension.class)
class CsiAttachIT {
    private static final Duration SETTLED = Duration.ofSeconds(60);
    private static final String NODE_KEY = "kubenbd.io/node";

    private final List<Runnable> cleanup = new ArrayList<>();

    @AfterEach
    void removeClusterScopedObjects() {
        cleanup.reversed().forEach(Runnable::run);
    }

    @Test
    void aReadWriteOnceVolumeIsAttachedToOneNodeAtATime(KubeTestCluster cluster, @TempDir Path dir) throws Exception {
        Scene scene = scene(cluster, "attach");
        KubernetesClient admin = cluster.client();
        try (AttachingSide running = AttachingSide.start(cluster, scene, dir)) {
            CsiAttacherProcess attacher = running.attacher();
            var attachments = admin.storage().v1().volumeAttachments();

            String onA = attach(admin, scene.pv(), scene.nodeA());
            VolumeAttachment attachedA = await(attacher, "VolumeAttachment " + onA + " attached", () -> attachments.withName(onA).get(),
                    va -> va.getStatus() != null && Boolean.TRUE.equals(va.getStatus().getAttached()));
            assertThat(attachedA.getStatus().getAttachmentMetadata()).containsExactly(entry(NODE_KEY, scene.nodeA()));

            // A pod rescheduled to node B while node A still has the volume: refused, and still refused when retried.
            String onB = attach(admin, scene.pv(), scene.nodeB());
            VolumeAttachment refused = await(attacher, "VolumeAttachment " + onB + " answered", () -> attachments.withName(onB).get(),
                    va -> va.getStatus() != null
                            && (va.getStatus().getAttachError() != null || Boolean.TRUE.equals(va.getStatus().getAttached())));
            assertThat(refused.getStatus().getAttached()).as("node B attached while node A holds the volume: %s", refused.getStatus())
                    .isNotEqualTo(true);
            assertThat(refused.getStatus().getAttachError().getMessage())
                    .contains("volume " + scene.volumeId() + " is attached read-write to node " + scene.nodeA())
                    .contains("FailedPrecondition");
            String firstRefusal = refused.getStatus().getAttachError().getTime();
            VolumeAttachment retried = await(attacher, "VolumeAttachment " + onB + " retried", () -> attachments.withName(onB).get(),
                    va -> va.getStatus().getAttachError() != null && !firstRefusal.equals(va.getStatus().getAttachError().getTime())
                            || Boolean.TRUE.equals(va.getStatus().getAttached()));
            assertThat(retried.getStatus().getAttached()).as("node B attached while node A holds the volume").isNotEqualTo(true);
            assertThat(attachments.withName(onA).get().getStatus().getAttached()).isTrue();

            // The pod on node A is gone: the attach/detach controller deletes A's attachment, the attacher detaches it
            // (ControllerUnpublishVolume, then the finalizer goes), and its retries give the volume to node B.
            attachments.withName(onA).delete();
            await(attacher, "VolumeAttachment " + onA + " detached and gone", () -> attachments.withName(onA).get() == null,
                    gone -> gone);
            VolumeAttachment attachedB = await(attacher, "VolumeAttachment " + onB + " attached", () -> attachments.withName(onB).get(),
                    va -> Boolean.TRUE.equals(va.getStatus().getAttached()));
            assertThat(attachedB.getStatus().getAttachmentMetadata()).containsExactly(entry(NODE_KEY, scene.nodeB()));

            attachments.withName(onB).delete();
            await(attacher, "VolumeAttachment " + onB + " detached and gone", () -> attachments.withName(onB).get() == null,
                    gone -> gone);
            assertThat(attacher.isAlive()).as(attacher.logTail()).isTrue();
        }
    }

    /**
     * Kubernetes' own first line: with the chart's CSIDriver (attachRequired), the attach/detach controller of the test
     * cluster's kube-controller-manager attaches the volume for a pod bound to node A (its VolumeAttachment, our
     * attacher and controller), and for a second pod of the same ReadWriteOnce claim bound to node B reports the
     * Multi-Attach error and makes no VolumeAttachment for B at all.
     */
    @Test
    void theAttachDetachControllerRefusesASecondNodeWithMultiAttachError(KubeTestCluster cluster, @TempDir Path dir)
            throws Exception {
        Scene scene = scene(cluster, "multiattach");
        KubernetesClient admin = cluster.client();
        String ns = scene.namespace();
        PersistentVolumeClaim claim = boundClaim(admin, scene);
        // The chart's CSIDriver, as installed: its attachRequired is what makes the attach/detach controller act.
        CSIDriver driver = HelmChart.objects(admin, HelmChart.render()).stream().filter(CSIDriver.class::isInstance)
                .map(CSIDriver.class::cast).findFirst().orElseThrow();
        admin.storage().v1().csiDrivers().resource(driver).forceConflicts().serverSideApply();
        cleanup.add(() -> admin.storage().v1().csiDrivers().withName(ExportResources.CSI_DRIVER).delete());
        try (AttachingSide running = AttachingSide.start(cluster, scene, dir)) {
            CsiAttacherProcess attacher = running.attacher();
            var attachments = admin.storage().v1().volumeAttachments();
            Predicate<VolumeAttachment> ofThisVolume = va -> scene.pv().getMetadata().getName()
                    .equals(va.getSpec().getSource().getPersistentVolumeName());
            admin.pods().inNamespace(ns).resource(podOn("writer-a", scene.nodeA(), claim)).create();
            VolumeAttachment onA = await(attacher, "the attach/detach controller's VolumeAttachment for node A attached",
                    () -> attachments.list().getItems().stream().filter(ofThisVolume)
                            .filter(va -> va.getSpec().getNodeName().equals(scene.nodeA())).findFirst().orElse(null),
                    va -> va.getStatus() != null && Boolean.TRUE.equals(va.getStatus().getAttached()));
            cleanup.add(() -> removeAttachment(admin, onA.getMetadata().getName()));
            assertThat(onA.getStatus().getAttachmentMetadata()).containsExactly(entry(NODE_KEY, scene.nodeA()));

            admin.pods().inNamespace(ns).resource(podOn("writer-b", scene.nodeB(), claim)).create();
            Event multiAttach = await(attacher, "a Multi-Attach error event for pod writer-b",
                    () -> admin.v1().events().inNamespace(ns).list().getItems().stream()
                            .filter(e -> "writer-b".equals(e.getInvolvedObject().getName())
                                    && e.getMessage() != null && e.getMessage().startsWith("Multi-Attach error"))
                            .findFirst().orElse(null),
                    e -> true);
            assertThat(multiAttach.getReason()).isEqualTo("FailedAttachVolume");
            assertThat(multiAttach.getMessage()).contains(scene.pv().getMetadata().getName()).contains("writer-a");
            assertThat(attachments.list().getItems().stream().filter(ofThisVolume))
                    .as("VolumeAttachments of the volume").extracting(va -> va.getSpec().getNodeName())
                    .containsExactly(scene.nodeA());
            admin.pods().inNamespace(ns).withName("writer-a").withGracePeriod(0).delete();
            admin.pods().inNamespace(ns).withName("writer-b").withGracePeriod(0).delete();
        }
    }

    /**
     * The claim {@code data}, naming the export's PersistentVolume, once the test cluster's PV binder has bound it
     * (the PV's claimRef carries the claim's UID and the claim's phase is Bound), which is what the attach/detach
     * controller checks before it attaches a claim's volume.
     */
    private static PersistentVolumeClaim boundClaim(KubernetesClient admin, Scene scene) {
        String pvName = scene.pv().getMetadata().getName();
        admin.persistentVolumeClaims().inNamespace(scene.namespace()).resource(
                new PersistentVolumeClaimBuilder().withNewMetadata().withName("data").endMetadata()
                        .withNewSpec().withAccessModes("ReadWriteOnce").withVolumeMode("Filesystem").withVolumeName(pvName)
                        .withStorageClassName(scene.pv().getSpec().getStorageClassName())
                        .withNewResources().withRequests(scene.pv().getSpec().getCapacity()).endResources()
                        .endSpec().build()).create();
        return Await.until("claim data bound to " + pvName + " by the PV binder", SETTLED,
                () -> admin.persistentVolumeClaims().inNamespace(scene.namespace()).withName("data").get(),
                claim -> claim.getStatus() != null && "Bound".equals(claim.getStatus().getPhase()));
    }

    /** A pod the scheduler has bound to {@code node}, using the claim; nothing runs it (there is no kubelet). */
    private static Pod podOn(String name, String node, PersistentVolumeClaim claim) {
        return new PodBuilder().withNewMetadata().withName(name).endMetadata()
                .withNewSpec().withNodeName(node)
                .addNewContainer().withName("app").withImage("kube-nbd:test").withCommand("sleep", "infinity")
                .addNewVolumeMount().withName("data").withMountPath("/data").endVolumeMount().endContainer()
                .addNewVolume().withName("data").withNewPersistentVolumeClaim().withClaimName(claim.getMetadata().getName())
                .endPersistentVolumeClaim().endVolume()
                .endSpec().build();
    }

    /** The controller's answers over its socket, beside the attacher: the codes the CSI spec names. */
    @Test
    void publishAnswersWithTheSpecsCodes(KubeTestCluster cluster, @TempDir Path dir) throws Exception {
        Scene scene = scene(cluster, "publish");
        KubernetesClient admin = cluster.client();
        Path socket = dir.resolve("controller.sock");
        EventLoopGroup group = new EpollEventLoopGroup(1);
        try (KubernetesClient asOperator = cluster.clientAs(scene.user());
             CsiControllerEndpoint controller = CsiControllerEndpoint.start(asOperator, socket)) {
            ManagedChannel channel = NettyChannelBuilder.forAddress(new DomainSocketAddress(socket.toFile()))
                    .eventLoopGroup(group).channelType(EpollDomainSocketChannel.class).usePlaintext().build();
            try {
                var csi = ControllerGrpc.newBlockingStub(channel).withDeadlineAfter(30, TimeUnit.SECONDS);
                assertCode(() -> csi.controllerPublishVolume(publish(scene.namespace() + "/nothing", scene.nodeA(), Mode.SINGLE_NODE_WRITER)),
                        Status.Code.NOT_FOUND, "there is no NbdExport nothing in namespace " + scene.namespace());
                assertCode(() -> csi.controllerPublishVolume(publish("not-an-export-handle", scene.nodeA(), Mode.SINGLE_NODE_WRITER)),
                        Status.Code.NOT_FOUND, "volume handles of this driver are <namespace>/<name> of an NbdExport");
                assertCode(() -> csi.controllerPublishVolume(publish(scene.volumeId(), "no-such-node", Mode.SINGLE_NODE_WRITER)),
                        Status.Code.NOT_FOUND, "node no-such-node does not exist");
                assertCode(() -> csi.controllerPublishVolume(publish(scene.volumeId(), "", Mode.SINGLE_NODE_WRITER)),
                        Status.Code.INVALID_ARGUMENT, "node_id is required");

                // Granted to A, and again (idempotent); B is refused while A's grant is not yet recorded as attached
                // (no VolumeAttachment status yet), once A's VolumeAttachment exists.
                assertThat(csi.controllerPublishVolume(publish(scene.volumeId(), scene.nodeA(), Mode.SINGLE_NODE_WRITER)).getPublishContextMap())
                        .containsExactly(entry(NODE_KEY, scene.nodeA()));
                assertThat(csi.controllerPublishVolume(publish(scene.volumeId(), scene.nodeA(), Mode.SINGLE_NODE_WRITER)).getPublishContextMap())
                        .containsExactly(entry(NODE_KEY, scene.nodeA()));
                String onA = attach(admin, scene.pv(), scene.nodeA());
                assertCode(() -> csi.controllerPublishVolume(publish(scene.volumeId(), scene.nodeB(), Mode.SINGLE_NODE_WRITER)),
                        Status.Code.FAILED_PRECONDITION, "volume " + scene.volumeId() + " is attached read-write to node " + scene.nodeA());
                // Unpublished from A (idempotent): B gets it although A's VolumeAttachment is still there, unattached.
                csi.controllerUnpublishVolume(ControllerUnpublishVolumeRequest.newBuilder().setVolumeId(scene.volumeId()).setNodeId(scene.nodeA()).build());
                csi.controllerUnpublishVolume(ControllerUnpublishVolumeRequest.newBuilder().setVolumeId(scene.volumeId()).setNodeId(scene.nodeA()).build());
                assertThat(csi.controllerPublishVolume(publish(scene.volumeId(), scene.nodeB(), Mode.SINGLE_NODE_WRITER)).getPublishContextMap())
                        .containsExactly(entry(NODE_KEY, scene.nodeB()));
                admin.storage().v1().volumeAttachments().withName(onA).delete();

                var readWriteOnce = publish(scene.volumeId(), scene.nodeA(), Mode.SINGLE_NODE_WRITER).getVolumeCapability();
                var validated = csi.validateVolumeCapabilities(ValidateVolumeCapabilitiesRequest.newBuilder()
                        .setVolumeId(scene.volumeId()).addVolumeCapabilities(readWriteOnce).build());
                assertThat(validated.getConfirmed().getVolumeCapabilitiesList()).containsExactly(readWriteOnce);
                var refusedCapability = csi.validateVolumeCapabilities(ValidateVolumeCapabilitiesRequest.newBuilder()
                        .setVolumeId(scene.volumeId())
                        .addVolumeCapabilities(publish(scene.volumeId(), scene.nodeA(), Mode.MULTI_NODE_MULTI_WRITER).getVolumeCapability())
                        .build());
                assertThat(refusedCapability.hasConfirmed()).isFalse();
                assertThat(refusedCapability.getMessage()).contains("cannot be written from several nodes");
                assertCode(() -> csi.validateVolumeCapabilities(ValidateVolumeCapabilitiesRequest.newBuilder()
                        .setVolumeId(scene.namespace() + "/nothing").addVolumeCapabilities(readWriteOnce).build()),
                        Status.Code.NOT_FOUND, "there is no NbdExport nothing");
            } finally {
                channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
            }
        } finally {
            group.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        }
    }

    /**
     * The operator's CSI controller on a socket in {@code dir} and the csi-attacher talking to it, both as the chart's
     * ServiceAccount, as the chart runs them in the operator pod; the attacher retries a refusal every 2 s at most.
     */
    private record AttachingSide(KubernetesClient asOperator, CsiControllerEndpoint controller, CsiAttacherProcess attacher)
            implements AutoCloseable {
        static AttachingSide start(KubeTestCluster cluster, Scene scene, Path dir) throws Exception {
            Path socket = dir.resolve("controller.sock");
            KubernetesClient asOperator = cluster.clientAs(scene.user());
            CsiControllerEndpoint controller = null;
            try {
                controller = CsiControllerEndpoint.start(asOperator, socket);
                return new AttachingSide(asOperator, controller, CsiAttacherProcess.start(cluster, dir.resolve("attacher"),
                        socket, scene.user(), Duration.ofSeconds(2)));
            } catch (RuntimeException | IOException e) {
                if (controller != null) {
                    controller.close();
                }
                asOperator.close();
                throw e;
            }
        }

        @Override
        public void close() {
            attacher.close();
            controller.close();
            asOperator.close();
        }
    }

    /**
     * What the tests start from: the chart's RBAC, a namespace with an NbdExport and its PersistentVolume, and two
     * nodes with the node plugin registered.
     *
     * @param user the chart's operator ServiceAccount, as which the controller and the attacher act
     */
    private record Scene(String user, String namespace, PersistentVolume pv, String nodeA, String nodeB) {
        String volumeId() {
            return namespace + "/disk";
        }
    }

    private Scene scene(KubeTestCluster cluster, String prefix) throws Exception {
        String user = HelmChart.installRbac(cluster.client());
        String ns = cluster.createNamespace(prefix);
        PersistentVolume pv = exportPersistentVolume(cluster, ns);
        return new Scene(user, ns, pv, node(cluster.client(), "node-a-" + ns), node(cluster.client(), "node-b-" + ns));
    }

    private static void assertCode(Runnable call, Status.Code code, String message) {
        assertThatThrownBy(call::run).isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
            assertThat(e.getStatus().getCode()).isEqualTo(code);
            assertThat(e.getStatus().getDescription()).contains(message);
        });
    }

    private static ControllerPublishVolumeRequest publish(String volumeId, String nodeId, Mode mode) {
        return ControllerPublishVolumeRequest.newBuilder().setVolumeId(volumeId).setNodeId(nodeId)
                .setVolumeCapability(VolumeCapability.newBuilder()
                        .setMount(VolumeCapability.MountVolume.newBuilder().setFsType("ext4"))
                        .setAccessMode(VolumeCapability.AccessMode.newBuilder().setMode(mode)))
                .build();
    }

    /**
     * An NbdExport with {@code persistentVolume.create} in {@code ns}, and the PersistentVolume the operator
     * (running here just long enough) writes for it.
     */
    private static PersistentVolume exportPersistentVolume(KubeTestCluster cluster, String ns) throws Exception {
        KubernetesClient admin = cluster.client();
        OperatorTestBed.installCrds(cluster);
        OperatorTestBed.createClaim(admin, ns, "disk", "Filesystem");
        PersistentVolume pv;
        try (KubeNbdOperator operator = KubeNbdOperator.start(admin, new OperatorOptions(Set.of(ns),
                new ServerSettings("kube-nbd:test", "Never", OperatorTestBed.freePort(), ServerSettings.DEFAULT_JAVA_OPTIONS),
                null, OperatorOptions.DEFAULT_LEASE_NAME, "csi-attach-it", "127.0.0.1", -1, 2, false, ns))) {
            OperatorTestBed.createExport(admin, ns, """
                    apiVersion: kubenbd.io/v1alpha1
                    kind: NbdExport
                    metadata: {name: disk}
                    spec:
                      source: {persistentVolumeClaim: disk, imagePath: disk.img}
                      persistentVolume: {create: true}
                    """);
            pv = OperatorTestBed.awaitPersistentVolume(admin, ns, "disk", SETTLED);
        }
        assertThat(pv.getSpec().getCsi().getDriver()).isEqualTo(ExportResources.CSI_DRIVER);
        assertThat(pv.getSpec().getCsi().getVolumeHandle()).isEqualTo(ns + "/disk");
        assertThat(pv.getSpec().getAccessModes()).containsExactly("ReadWriteOnce");
        return pv;
    }

    /**
     * A Node whose attachments the attach/detach controller manages (kubelet sets the annotation), and the CSINode
     * its kubelet would register when the node plugin starts (node id = node name).
     */
    private String node(KubernetesClient admin, String name) {
        admin.nodes().resource(new NodeBuilder().withNewMetadata().withName(name)
                .addToAnnotations("volumes.kubernetes.io/controller-managed-attach-detach", "true").endMetadata().build()).create();
        cleanup.add(() -> admin.nodes().withName(name).delete());
        admin.storage().v1().csiNodes().resource(new CSINodeBuilder().withNewMetadata().withName(name).endMetadata()
                .withNewSpec().addNewDriver().withName(ExportResources.CSI_DRIVER).withNodeID(name).endDriver().endSpec()
                .build()).create();
        cleanup.add(() -> admin.storage().v1().csiNodes().withName(name).delete());
        return name;
    }

    /** The VolumeAttachment the attach/detach controller makes when a pod using the PV is scheduled to the node. */
    private String attach(KubernetesClient admin, PersistentVolume pv, String node) {
        String name = "csi-" + node;
        admin.storage().v1().volumeAttachments().resource(new VolumeAttachmentBuilder()
                .withNewMetadata().withName(name).endMetadata()
                .withNewSpec().withAttacher(ExportResources.CSI_DRIVER).withNodeName(node)
                .withNewSource().withPersistentVolumeName(pv.getMetadata().getName()).endSource().endSpec()
                .build()).create();
        cleanup.add(() -> removeAttachment(admin, name));
        return name;
    }

    /**
     * Deletes a leftover VolumeAttachment, taking the attacher's finalizer off if the attacher is
     * gone; the attach/detach controller may change it meanwhile (409), so that is tried again.
     */
    private static void removeAttachment(KubernetesClient admin, String name) {
        var attachment = admin.storage().v1().volumeAttachments().withName(name);
        for (int attempt = 1; ; attempt++) {
            try {
                if (attachment.get() != null) {
                    attachment.edit(va -> new VolumeAttachmentBuilder(va).editMetadata().withFinalizers(List.of()).endMetadata().build());
                    attachment.delete();
                }
                return;
            } catch (KubernetesClientException e) {
                if (e.getCode() == 404) {
                    return;
                }
                if (e.getCode() != 409 || attempt == 5) {
                    throw e;
                }
            }
        }
    }

    /** {@link Await#until}, with the attacher's log in the failure: what it did is what a failure needs explained. */
    private static <T> T await(CsiAttacherProcess attacher, String what, Supplier<T> value, Predicate<? super T> done) {
        try {
            return Await.until(what, SETTLED, value, done);
        } catch (AssertionError e) {
            throw new AssertionError(e.getMessage() + "\n" + attacher.logTail(), e);
        }
    }
}
