package orgdir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;

import org.h2.mvstore.MVMap;
import org.h2.mvstore.MVStore;

import de.bwaldvogel.mongo.MongoBackend;
import de.bwaldvogel.mongo.MongoCollection;
import de.bwaldvogel.mongo.MongoDatabase;
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.CollectionOptions;
import de.bwaldvogel.mongo.backend.CursorRegistry;
import de.bwaldvogel.mongo.backend.Index;
import de.bwaldvogel.mongo.backend.IndexKey;
import de.bwaldvogel.mongo.backend.QueryResult;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.backend.h2.H2Collection;
import de.bwaldvogel.mongo.backend.h2.H2Database;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import de.bwaldvogel.mongo.backend.memory.MemoryCollection;
import de.bwaldvogel.mongo.backend.memory.MemoryDatabase;
import de.bwaldvogel.mongo.bson.BsonRegularExpression;
import de.bwaldvogel.mongo.bson.Document;
import io.netty.channel.Channel;

/**
 * mongo-java-server as a process on a given port: the library has no main of its own.
 *
 * <p>Usage: {@code MongoLauncher --host 127.0.0.1 --port N --backend memory|h2 [--file PATH]}.
 * Started and stopped (SIGTERM) by {@code orgdir_tools.localservers.MongoServer}.
 *
 * <p>Both backends are subclassed down to the collection (see {@link IdLookup}) so that a filter
 * with an {@code _id} equality and other keys uses the {@code _id} index, as MongoDB does; the
 * library itself uses an index only when the filter's keys are exactly the index's keys.
 * Everything is in this one file: {@code orgdir_tools.localservers} compiles only this file.
 */
public final class MongoLauncher {

    /** MongoDB 6.0 / wire version 17: PyMongo 4.20+ refuses the library's default (5.0, wire 8). */
    static final class Mongo60 implements MongoVersion {
        @Override
        public List<Integer> getVersionArray() {
            return List.of(6, 0, 0);
        }

        @Override
        public int getWireVersion() {
            return 17;
        }
    }

    /** The library's command handler, for {@link #withHello}. */
    @FunctionalInterface
    interface Commands {
        Document handle(Channel channel, String database, String command, Document query);
    }

    /**
     * Answers {@code hello} like {@code isMaster}: a MongoDB 6.0 has both, the library only the
     * old one (PyMongo itself handshakes with {@code isMaster}, but tools and tests ask {@code hello}).
     */
    static Document withHello(Commands library, Channel channel, String database, String command, Document query) {
        if (!"hello".equalsIgnoreCase(command)) {
            return library.handle(channel, database, command, query);
        }
        Document reply = library.handle(channel, database, "isMaster", query);
        reply.put("isWritablePrimary", reply.remove("ismaster"));
        return reply;
    }

    /**
     * The {@code _id} index for filters that have other keys too: {@code {_id: "x", version: 3}}
     * or {@code {_id: "k", sequence: {$lt: 5}, $or: [...]}}. The library (1.47.0) uses an index
     * only when the filter's key set equals the index's, so these scanned (and matched) every
     * document of the collection, under the collection's lock. Here the {@code _id} index gives
     * the candidates for the {@code _id} condition alone and the library's matcher applies the
     * whole filter to those candidates only, so results are those of the scan.
     *
     * <p>Handled {@code _id} conditions: a plain value (not null, a document, an array or a
     * regular expression), {@code {$eq: plain}} and {@code {$in: [plain, ...]}}. Anything else,
     * and filters of the {@code _id} alone (which the library already serves from the index),
     * take the library's own path.
     */
    static final class IdLookup {

        private IdLookup() {
        }

        /** The candidate positions, or null when the library's own path should answer. */
        static <P> Iterable<P> candidates(MongoCollection<P> collection, String idField, Document filter) {
            if (idField == null || filter == null || filter.size() < 2 || !filter.containsKey(idField)) {
                return null;
            }
            Document lookup = lookupFilter(idField, filter.get(idField));
            if (lookup == null) {
                return null;
            }
            for (Index<P> index : collection.getIndexes()) {
                if (isIdIndex(index, idField) && index.canHandle(lookup)) {
                    // a set: values equal after normalisation (1 and 1.0) give one position
                    Set<P> positions = new LinkedHashSet<>();
                    index.getPositions(lookup).forEach(positions::add);
                    return positions;
                }
            }
            return null;
        }

        /** {@code {_id: value}} or {@code {_id: {$in: [...]}}} for the index, or null. */
        private static Document lookupFilter(String idField, Object condition) {
            if (isPlain(condition)) {
                return new Document(idField, condition);
            }
            if (!(condition instanceof Document operators) || operators.size() != 1) {
                return null;
            }
            if (operators.containsKey("$eq") && isPlain(operators.get("$eq"))) {
                return new Document(idField, operators.get("$eq"));
            }
            if (operators.get("$in") instanceof Collection<?> values && values.stream().allMatch(IdLookup::isPlain)) {
                return new Document(idField, new Document("$in", new ArrayList<>(values)));
            }
            return null;
        }

        /** A value an equality on {@code _id} can be answered for from the index. */
        private static boolean isPlain(Object value) {
            return value != null
                && !(value instanceof Map)
                && !(value instanceof Collection)
                && !(value instanceof Object[])
                && !(value instanceof Pattern)
                && !BsonRegularExpression.isRegularExpression(value);
        }

        private static boolean isIdIndex(Index<?> index, String idField) {
            List<IndexKey> keys = index.getKeys();
            return index.isUnique() && keys.size() == 1 && idField.equals(keys.get(0).getKey());
        }
    }

    /** The memory backend with {@code hello} and {@link IdLookup}. */
    static final class Memory extends MemoryBackend {
        @Override
        public Document handleCommand(Channel channel, String database, String command, Document query) {
            return withHello(super::handleCommand, channel, database, command, query);
        }

        @Override
        public MemoryDatabase openOrCreateDatabase(String databaseName) {
            return new IndexedDatabase(databaseName, getCursorRegistry());
        }

        static final class IndexedDatabase extends MemoryDatabase {
            IndexedDatabase(String databaseName, CursorRegistry cursorRegistry) {
                super(databaseName, cursorRegistry);
            }

            @Override
            protected MemoryCollection openOrCreateCollection(String collectionName, CollectionOptions options) {
                return new IndexedCollection(this, collectionName, options, cursorRegistry);
            }
        }

        static final class IndexedCollection extends MemoryCollection {
            IndexedCollection(MongoDatabase database, String collectionName, CollectionOptions options,
                              CursorRegistry cursorRegistry) {
                super(database, collectionName, options, cursorRegistry);
            }

            @Override
            protected QueryResult queryDocuments(Document query, Document orderBy, int numberToSkip, int limit,
                                                 int batchSize, Document fieldSelector) {
                Iterable<Integer> candidates = IdLookup.candidates(this, getIdField(), query);
                if (candidates == null) {
                    return super.queryDocuments(query, orderBy, numberToSkip, limit, batchSize, fieldSelector);
                }
                return matchDocuments(query, candidates, orderBy, numberToSkip, limit, batchSize, fieldSelector);
            }
        }
    }

    /**
     * The H2 (MVStore file) backend with {@code hello} and {@link IdLookup}.
     *
     * <p>{@link IndexedDatabase} is an inner class on purpose: {@code H2Database}'s constructor already
     * opens the collections found in the file (through our {@code openOrCreateCollection}), before
     * any field of a subclass is set; the enclosing backend, and so its MVStore, is set first.
     */
    static final class H2 extends H2Backend {
        /** Opens (creates) the MVStore file; it stays locked while open. */
        H2(String fileName) {
            super(fileName);
        }

        @Override
        public Document handleCommand(Channel channel, String database, String command, Document query) {
            return withHello(super::handleCommand, channel, database, command, query);
        }

        @Override
        protected MongoDatabase openOrCreateDatabase(String databaseName) {
            return new IndexedDatabase(databaseName, getCursorRegistry());
        }

        final class IndexedDatabase extends H2Database {
            IndexedDatabase(String databaseName, CursorRegistry cursorRegistry) {
                super(databaseName, H2.this.getMvStore(), cursorRegistry);
            }

            /** As the library's, whose maps are named "databases.{db}.{coll}" and "meta.{db}.{coll}" (1.47.0). */
            @Override
            protected MongoCollection<Object> openOrCreateCollection(String collectionName, CollectionOptions options) {
                MVStore store = H2.this.getMvStore();
                String fullName = getFullCollectionNamespace(collectionName);
                MVMap<Object, Document> dataMap = store.openMap("databases." + fullName);
                MVMap<String, Object> metaMap = store.openMap("meta." + fullName);
                return new IndexedCollection(this, collectionName, options, dataMap, metaMap, cursorRegistry);
            }
        }

        static final class IndexedCollection extends H2Collection {
            IndexedCollection(MongoDatabase database, String collectionName, CollectionOptions options,
                              MVMap<Object, Document> dataMap, MVMap<String, Object> metaMap,
                              CursorRegistry cursorRegistry) {
                super(database, collectionName, options, dataMap, metaMap, cursorRegistry);
            }

            @Override
            protected QueryResult queryDocuments(Document query, Document orderBy, int numberToSkip, int limit,
                                                 int batchSize, Document fieldSelector) {
                Iterable<Object> candidates = IdLookup.candidates(this, getIdField(), query);
                if (candidates == null) {
                    return super.queryDocuments(query, orderBy, numberToSkip, limit, batchSize, fieldSelector);
                }
                return matchDocuments(query, candidates, orderBy, numberToSkip, limit, batchSize, fieldSelector);
            }
        }
    }

    private MongoLauncher() {
    }

    public static void main(String[] args) throws Exception {
        String host = "127.0.0.1";
        int port = -1;
        String backendName = "memory";
        String file = null;
        for (int i = 0; i < args.length; i += 2) {
            if (i + 1 >= args.length) {
                usage("missing value for " + args[i]);
            }
            String value = args[i + 1];
            switch (args[i]) {
                case "--host" -> host = value;
                case "--port" -> port = Integer.parseInt(value);
                case "--backend" -> backendName = value;
                case "--file" -> file = value;
                default -> usage("unknown option " + args[i]);
            }
        }
        if (port < 0) {
            usage("--port is required");
        }
        MongoBackend backend = switch (backendName) {
            case "memory" -> new Memory();
            case "h2" -> {
                if (file == null) {
                    usage("--backend h2 needs --file");
                }
                Path parent = Path.of(file).toAbsolutePath().getParent();
                Files.createDirectories(parent);
                // One MVStore file; it is locked while open, so a second server on it fails at once.
                yield new H2(file);
            }
            default -> throw usage("unknown backend " + backendName);
        };
        backend.version(new Mongo60());
        MongoServer server = new MongoServer(backend);
        // SIGTERM runs this: closes clients and the backend (H2 commits and closes its file).
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow, "orgdir-mongo-shutdown"));
        server.bind(host, port);
        System.out.println("orgdir mongo-java-server listening on " + host + ":" + port
            + " backend=" + backendName + (file == null ? "" : " file=" + file));
        System.out.flush();
        Thread.currentThread().join(); // serve until a signal; the hook does the rest
    }

    private static IllegalArgumentException usage(String problem) {
        System.err.println("error: " + problem);
        System.err.println("usage: MongoLauncher --host HOST --port PORT --backend memory|h2 [--file PATH]");
        System.exit(2);
        return new IllegalArgumentException(problem);
    }
}
