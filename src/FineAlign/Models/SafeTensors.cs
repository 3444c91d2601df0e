using System.IO.MemoryMappedFiles;
using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Models;

/// <summary>One tensor's entry in a safetensors header; offsets are relative to the data region.</summary>
public sealed record SafeTensorEntry(string Name, string DType, long[] Shape, long Begin, long End)
{
    public long ByteLength => End - Begin;
}

/// <summary>
/// A validated, memory-mapped safetensors file (https://github.com/huggingface/safetensors, format:
/// 8-byte little-endian header length N, N bytes of JSON header, then raw little-endian data).
/// Every header field is checked before any tensor is built, so a corrupt or hostile file fails
/// with a one-line <see cref="FineAlignException"/> naming the file and tensor.
/// </summary>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _base;
    private readonly long _dataStart;
    private bool _disposed;

    private SafeTensorsFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, long dataStart,
        Dictionary<string, SafeTensorEntry> entries, Dictionary<string, string> metadata)
    {
        Path = path; _map = map; _view = view; _dataStart = dataStart;
        Entries = entries; Metadata = metadata;
        byte* p = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _base = p + view.PointerOffset;
    }

    public string Path { get; }
    public IReadOnlyDictionary<string, SafeTensorEntry> Entries { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Bytes per element of a safetensors dtype, or 0 when the dtype is not supported.</summary>
    public static int ItemSize(string dtype) => dtype switch
    {
        "F64" or "I64" => 8,
        "F32" or "I32" => 4,
        "F16" or "BF16" or "I16" => 2,
        "I8" or "U8" or "BOOL" => 1,
        _ => 0,
    };

    public static ScalarType ToScalarType(string dtype) => dtype switch
    {
        "F64" => ScalarType.Float64, "F32" => ScalarType.Float32, "F16" => ScalarType.Float16, "BF16" => ScalarType.BFloat16,
        "I64" => ScalarType.Int64, "I32" => ScalarType.Int32, "I16" => ScalarType.Int16, "I8" => ScalarType.Int8,
        "U8" => ScalarType.Byte, "BOOL" => ScalarType.Bool,
        _ => throw new ArgumentException($"unsupported safetensors dtype {dtype}"),
    };

    public static string FromScalarType(ScalarType t) => t switch
    {
        ScalarType.Float64 => "F64", ScalarType.Float32 => "F32", ScalarType.Float16 => "F16", ScalarType.BFloat16 => "BF16",
        ScalarType.Int64 => "I64", ScalarType.Int32 => "I32", ScalarType.Int16 => "I16", ScalarType.Int8 => "I8",
        ScalarType.Byte => "U8", ScalarType.Bool => "BOOL",
        _ => throw new FineAlignException($"tensors of dtype {t} cannot be written to safetensors."),
    };

    /// <summary>Opens and validates <paramref name="path"/>; the data stays on disk (memory-mapped).</summary>
    public static SafeTensorsFile Open(string path)
    {
        if (!BitConverter.IsLittleEndian) throw new FineAlignException("safetensors reading needs a little-endian machine.");
        if (!File.Exists(path)) throw new FineAlignException($"{path}: safetensors file not found.");
        // Hub-cache files are symlinks into blobs/: size and data come from the target (checked to stay inside).
        string real = LinkedFile.Resolve(path);
        long fileLength = new FileInfo(real).Length;
        if (fileLength < 8) throw new FineAlignException($"{path}: file is too short ({fileLength} bytes) to be safetensors.");

        byte[] header;
        using (var fs = new FileStream(real, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            Span<byte> lenBytes = stackalloc byte[8];
            fs.ReadExactly(lenBytes);
            ulong n = BitConverter.ToUInt64(lenBytes);
            if (n == 0) throw new FineAlignException($"{path}: safetensors header length is 0.");
            if (n > MaxHeaderBytes) throw new FineAlignException($"{path}: safetensors header length {n} exceeds the {MaxHeaderBytes}-byte limit (corrupt or not a safetensors file).");
            if (8 + (long)n > fileLength) throw new FineAlignException($"{path}: safetensors header length {n} runs past the end of the {fileLength}-byte file (truncated?).");
            header = new byte[n];
            fs.ReadExactly(header);
        }
        long dataStart = 8 + header.Length;
        long dataLength = fileLength - dataStart;
        var (entries, metadata) = ParseHeader(path, header, dataLength);

        var map = MemoryMappedFile.CreateFromFile(new FileStream(real, FileMode.Open, FileAccess.Read, FileShare.Read),
            null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
        try
        {
            var view = map.CreateViewAccessor(0, fileLength, MemoryMappedFileAccess.Read);
            return new SafeTensorsFile(path, map, view, dataStart, entries, metadata);
        }
        catch
        {
            map.Dispose();
            throw;
        }
    }

    private static (Dictionary<string, SafeTensorEntry>, Dictionary<string, string>) ParseHeader(string path, byte[] header, long dataLength)
    {
        // JsonDocument checks UTF-8 only when a string is read (InvalidOperationException), so check it up front.
        if (!System.Text.Unicode.Utf8.IsValid(header))
            throw new FineAlignException($"{path}: safetensors header is not valid UTF-8 (corrupt or not a safetensors file).");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new FineAlignException($"{path}: safetensors header is not valid JSON ({e.Message.Split('\n')[0]}).");
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new FineAlignException($"{path}: safetensors header must be a JSON object.");
            var entries = new Dictionary<string, SafeTensorEntry>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                string name = prop.Name;
                if (name == "__metadata__")
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object)
                        throw new FineAlignException($"{path}: safetensors '__metadata__' must be a JSON object.");
                    foreach (var m in prop.Value.EnumerateObject())
                        metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
                    continue;
                }
                var entry = ParseEntry(path, name, prop.Value, dataLength);
                if (!entries.TryAdd(name, entry))
                    throw new FineAlignException($"{path}: tensor '{name}' appears twice in the safetensors header.");
            }
            // Overlap check: sort the non-empty ranges and compare neighbours.
            SafeTensorEntry? prev = null;
            foreach (var e in entries.Values.Where(e => e.ByteLength > 0).OrderBy(e => e.Begin))
            {
                if (prev is not null && e.Begin < prev.End)
                    throw new FineAlignException($"{path}: tensors '{prev.Name}' and '{e.Name}' overlap in the data region.");
                prev = e;
            }
            return (entries, metadata);
        }
    }

    private static SafeTensorEntry ParseEntry(string path, string name, JsonElement v, long dataLength)
    {
        string where = $"{path}: tensor '{name}'";
        if (v.ValueKind != JsonValueKind.Object) throw new FineAlignException($"{where}: header entry must be a JSON object.");
        if (!v.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw new FineAlignException($"{where}: 'dtype' is missing or not a string.");
        string dtype = dt.GetString()!;
        int item = ItemSize(dtype);
        if (item == 0) throw new FineAlignException($"{where}: dtype '{dtype}' is not supported (F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL).");
        if (!v.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new FineAlignException($"{where}: 'shape' is missing or not an array.");
        var shape = new long[sh.GetArrayLength()];
        int i = 0;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0)
                throw new FineAlignException($"{where}: shape entry {d.GetRawText()} is not a non-negative integer.");
            shape[i++] = dim;
        }
        if (!v.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new FineAlignException($"{where}: 'data_offsets' must be an array [begin, end].");
        long begin = -1, end = -1;
        // TryGetInt64 throws on a non-number element ("data_offsets": [{}, 4]), so check the kind first.
        if (off[0].ValueKind != JsonValueKind.Number || off[1].ValueKind != JsonValueKind.Number
            || !off[0].TryGetInt64(out begin) || !off[1].TryGetInt64(out end) || begin < 0 || end < begin)
            throw new FineAlignException($"{where}: data_offsets {off.GetRawText()} are not 0 <= begin <= end.");
        if (end > dataLength)
            throw new FineAlignException($"{where}: data_offsets [{begin}, {end}] lie outside the {dataLength}-byte data region (truncated file?).");
        long bytes;
        try
        {
            bytes = item;
            foreach (long dim in shape) bytes = checked(bytes * dim);
        }
        catch (OverflowException)
        {
            throw new FineAlignException($"{where}: shape [{string.Join(", ", shape)}] is too large.");
        }
        if (bytes != end - begin)
            throw new FineAlignException($"{where}: shape [{string.Join(", ", shape)}] of {dtype} needs {bytes} bytes but data_offsets span {end - begin}.");
        return new SafeTensorEntry(name, dtype, shape, begin, end);
    }

    public bool Contains(string name) => Entries.ContainsKey(name);

    /// <summary>
    /// Builds a CPU tensor from the stored bytes. Floating tensors are converted to
    /// <paramref name="floatDtype"/> when given; integer/bool tensors keep their type.
    /// </summary>
    public Tensor Read(string name, ScalarType? floatDtype = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!Entries.TryGetValue(name, out var e)) throw new FineAlignException($"{Path}: tensor '{name}' not found.");
        var stored = ToScalarType(e.DType);
        var t = empty(e.Shape, stored);
        try
        {
            // Raw copy into the tensor's own storage: the bits are reinterpreted by libtorch's
            // dtype, so BF16/F16 need no manual bit tricks.
            byte* src = _base + _dataStart + e.Begin;
            long total = e.ByteLength;
            if (total > 0)
            {
                using var flat = t.view(-1);
                int item = ItemSize(e.DType);
                long chunkElems = (1L << 30) / item;
                for (long first = 0; first * item < total; first += chunkElems)
                {
                    long n = Math.Min(chunkElems, total / item - first);
                    using var part = flat.narrow(0, first, n);
                    new ReadOnlySpan<byte>(src + first * item, checked((int)(n * item))).CopyTo(part.bytes);
                }
            }
            if (floatDtype is ScalarType want && t.is_floating_point() && want != stored)
            {
                var converted = t.to(want);
                t.Dispose();
                return converted;
            }
            return t;
        }
        catch
        {
            t.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }
}

/// <summary>Reading and writing safetensors files and sharded checkpoints.</summary>
public static class SafeTensors
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    /// <summary>All tensors of one file (floating ones converted to <paramref name="floatDtype"/> when given).</summary>
    public static Dictionary<string, Tensor> Load(string path, ScalarType? floatDtype = null)
    {
        using var f = SafeTensorsFile.Open(path);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var name in f.Entries.Keys) result[name] = f.Read(name, floatDtype);
        return result;
    }

    /// <summary>
    /// Writes one safetensors file in each tensor's own dtype, atomically (temp file in the same
    /// folder, then rename). The header is padded with spaces to a multiple of 8 bytes, as the
    /// reference implementation does, so the data region is 8-byte aligned.
    /// </summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, _) in list)
        {
            if (name == "__metadata__" || !seen.Add(name)) throw new ArgumentException($"duplicate or reserved tensor name '{name}'");
        }
        string full = System.IO.Path.GetFullPath(path);
        string dir = System.IO.Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        string tmp = System.IO.Path.Combine(dir, "." + System.IO.Path.GetFileName(full) + ".tmp-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                WriteTo(fs, list, metadata ?? new Dictionary<string, string> { ["format"] = "pt" });
                fs.Flush(true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    private static void WriteTo(Stream s, List<KeyValuePair<string, Tensor>> list, IReadOnlyDictionary<string, string> metadata)
    {
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteStartObject("__metadata__");
            foreach (var (k, v) in metadata) w.WriteString(k, v);
            w.WriteEndObject();
            long offset = 0;
            foreach (var (name, t) in list)
            {
                long bytes = t.NumberOfElements * t.ElementSize;
                w.WriteStartObject(name);
                w.WriteString("dtype", SafeTensorsFile.FromScalarType(t.dtype));
                w.WriteStartArray("shape");
                foreach (long d in t.shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + bytes);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += bytes;
            }
            w.WriteEndObject();
        }
        int pad = (int)((8 - buffer.Length % 8) % 8);
        for (int i = 0; i < pad; i++) buffer.WriteByte((byte)' ');
        s.Write(BitConverter.GetBytes((ulong)buffer.Length));
        buffer.Position = 0;
        buffer.CopyTo(s);
        foreach (var (_, t) in list)
        {
            using var c = t.detach().cpu().contiguous();
            if (c.NumberOfElements == 0) continue;
            using var flat = c.view(-1);
            long chunk = (1L << 30) / c.ElementSize;
            for (long first = 0; first < flat.shape[0]; first += chunk)
            {
                using var part = flat.narrow(0, first, Math.Min(chunk, flat.shape[0] - first));
                s.Write(part.bytes);
            }
        }
    }

    /// <summary>
    /// Writes a checkpoint into <paramref name="folder"/>: one <c>model.safetensors</c> when everything
    /// fits in <paramref name="maxShardBytes"/>, otherwise <c>model-0000i-of-0000n.safetensors</c> shards
    /// plus <c>model.safetensors.index.json</c> (as transformers' save_pretrained does).
    /// Returns the file names written.
    /// </summary>
    public static IReadOnlyList<string> SaveSharded(string folder, IEnumerable<KeyValuePair<string, Tensor>> tensors, long maxShardBytes)
    {
        if (maxShardBytes <= 0) throw new ArgumentOutOfRangeException(nameof(maxShardBytes));
        var list = tensors.ToList();
        var shards = new List<List<KeyValuePair<string, Tensor>>> { new() };
        long size = 0, total = 0;
        foreach (var kv in list)
        {
            long bytes = kv.Value.NumberOfElements * kv.Value.ElementSize;
            if (size > 0 && size + bytes > maxShardBytes) { shards.Add(new()); size = 0; }
            shards[^1].Add(kv);
            size += bytes;
            total += bytes;
        }
        // A stale single file would shadow a new index (and vice versa): remove the other layout.
        if (shards.Count == 1)
        {
            Save(System.IO.Path.Combine(folder, SingleFileName), list);
            File.Delete(System.IO.Path.Combine(folder, IndexFileName));
            return new[] { SingleFileName };
        }
        File.Delete(System.IO.Path.Combine(folder, SingleFileName));
        var names = new List<string>();
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < shards.Count; i++)
        {
            string file = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
            Save(System.IO.Path.Combine(folder, file), shards[i]);
            foreach (var (n, _) in shards[i]) weightMap[n] = file;
            names.Add(file);
        }
        var index = new { metadata = new { total_size = total }, weight_map = weightMap };
        string indexPath = System.IO.Path.Combine(folder, IndexFileName);
        string tmp = indexPath + ".tmp-" + Guid.NewGuid().ToString("N")[..8];
        File.WriteAllText(tmp, JsonSerializer.Serialize(index, new JsonSerializerOptions { WriteIndented = true }));
        File.Move(tmp, indexPath, overwrite: true);
        names.Add(IndexFileName);
        return names;
    }

    /// <summary>
    /// Reads <c>model.safetensors.index.json</c>: tensor name → shard path. Shard names must be plain
    /// file names inside the folder (no directories, no <c>..</c>, not absolute).
    /// </summary>
    public static Dictionary<string, string> ReadIndex(string indexPath)
    {
        string folder = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(indexPath))!;
        JsonDocument doc;
        try
        {
            var info = new FileInfo(LinkedFile.Resolve(indexPath));
            if (info.Length > SafeTensorsFile.MaxHeaderBytes) throw new FineAlignException($"{indexPath}: index file is larger than {SafeTensorsFile.MaxHeaderBytes} bytes.");
            byte[] bytes = File.ReadAllBytes(info.FullName);
            if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw new FineAlignException($"{indexPath}: not valid UTF-8.");
            doc = JsonDocument.Parse(bytes);
        }
        catch (JsonException e)
        {
            throw new FineAlignException($"{indexPath}: not valid JSON ({e.Message.Split('\n')[0]}).");
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new FineAlignException($"{indexPath}: field 'weight_map' is missing or not an object.");
            var result = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var p in map.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String)
                    throw new FineAlignException($"{indexPath}: weight_map entry '{p.Name}' is not a file name.");
                result[p.Name] = ResolveInside(folder, p.Value.GetString()!, indexPath, $"weight_map entry '{p.Name}'");
            }
            return result;
        }
    }

    /// <summary>
    /// Resolves a file name taken from a config/index so that it can never point outside <paramref name="folder"/>.
    /// </summary>
    public static string ResolveInside(string folder, string fileName, string source, string what)
    {
        if (string.IsNullOrEmpty(fileName) || fileName is "." or ".." || System.IO.Path.IsPathRooted(fileName)
            || fileName.Contains('/') || fileName.Contains('\\') || fileName.Contains('\0') || fileName != System.IO.Path.GetFileName(fileName))
            throw new FineAlignException($"{source}: {what} names '{fileName}', which is not a plain file name inside the model folder.");
        string full = System.IO.Path.GetFullPath(System.IO.Path.Combine(folder, fileName));
        string root = System.IO.Path.GetFullPath(folder).TrimEnd(System.IO.Path.DirectorySeparatorChar) + System.IO.Path.DirectorySeparatorChar;
        if (!full.StartsWith(root, StringComparison.Ordinal))
            throw new FineAlignException($"{source}: {what} names '{fileName}', which lies outside the model folder.");
        return full;
    }
}

/// <summary>
/// The weights of a model folder: <c>model.safetensors</c> or a sharded set with
/// <c>model.safetensors.index.json</c>. Pickle checkpoints (<c>.bin</c>/<c>.pt</c>) are refused:
/// unpickling can run arbitrary code.
/// </summary>
public sealed class SafeTensorsCheckpoint : IDisposable
{
    private readonly List<SafeTensorsFile> _files = new();
    private readonly Dictionary<string, SafeTensorsFile> _byName = new(StringComparer.Ordinal);

    private SafeTensorsCheckpoint(string folder) => Folder = folder;

    public string Folder { get; }
    public IEnumerable<string> Names => _byName.Keys;
    public bool Contains(string name) => _byName.ContainsKey(name);
    public SafeTensorEntry Entry(string name) => _byName[name].Entries[name];
    /// <summary>The file holding <paramref name="name"/> (for messages).</summary>
    public string FileOf(string name) => _byName[name].Path;
    public Tensor Read(string name, ScalarType? floatDtype = null) => _byName[name].Read(name, floatDtype);

    public static SafeTensorsCheckpoint Open(string folder)
    {
        if (!Directory.Exists(folder)) throw new FineAlignException($"{folder}: model folder not found.");
        string single = Path.Combine(folder, SafeTensors.SingleFileName);
        string index = Path.Combine(folder, SafeTensors.IndexFileName);
        var ck = new SafeTensorsCheckpoint(folder);
        try
        {
            if (File.Exists(single))
            {
                ck.Add(SafeTensorsFile.Open(single));
            }
            else if (File.Exists(index))
            {
                var map = SafeTensors.ReadIndex(index);
                var opened = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
                foreach (var (name, file) in map)
                {
                    if (!opened.TryGetValue(file, out var f))
                    {
                        if (!File.Exists(file)) throw new FineAlignException($"{index}: shard '{Path.GetFileName(file)}' (for tensor '{name}') does not exist.");
                        f = SafeTensorsFile.Open(file);
                        opened[file] = f;
                        ck._files.Add(f);
                    }
                    if (!f.Contains(name)) throw new FineAlignException($"{file}: tensor '{name}' listed in {SafeTensors.IndexFileName} is not in this shard.");
                    ck._byName[name] = f;
                }
            }
            else
            {
                var pickles = Directory.EnumerateFiles(folder)
                    .Select(Path.GetFileName)
                    .Where(n => n!.EndsWith(".bin", StringComparison.OrdinalIgnoreCase) || n.EndsWith(".pt", StringComparison.OrdinalIgnoreCase)
                                || n.EndsWith(".pth", StringComparison.OrdinalIgnoreCase) || n.EndsWith(".ckpt", StringComparison.OrdinalIgnoreCase))
                    .ToList();
                if (pickles.Count > 0)
                    throw new FineAlignException(
                        $"{folder}: only pickle checkpoints found ({string.Join(", ", pickles)}); pickle checkpoints are not loaded for safety (they can run code). " +
                        "Convert to safetensors, e.g. in Python: AutoModelForCausalLM.from_pretrained(path).save_pretrained(out, safe_serialization=True).");
                throw new FineAlignException($"{folder}: no weights found (expected {SafeTensors.SingleFileName} or {SafeTensors.IndexFileName}).");
            }
            return ck;
        }
        catch
        {
            ck.Dispose();
            throw;
        }
    }

    private void Add(SafeTensorsFile f)
    {
        _files.Add(f);
        foreach (var n in f.Entries.Keys) _byName[n] = f;
    }

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
        _files.Clear();
    }
}
