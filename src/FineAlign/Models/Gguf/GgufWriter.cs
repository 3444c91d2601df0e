using System.Text;

namespace FineAlign.Models.Gguf;

/// <summary>Value types of GGUF metadata (ggml's gguf.h numbering).</summary>
public enum GgufValueType : uint
{
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7,
    String = 8, Array = 9, UInt64 = 10, Int64 = 11, Float64 = 12,
}

/// <summary>The ggml tensor types FineAlign writes (ggml.h numbering).</summary>
public enum GgmlType : uint { F32 = 0, F16 = 1, BF16 = 30 }

/// <summary>
/// Writes a GGUF v3 file (ggml's format for llama.cpp): the magic "GGUF", version 3, tensor and
/// metadata counts, the key/value metadata, one info record per tensor (name, ggml dims — innermost
/// first, i.e. PyTorch's shape reversed —, type, offset), padding to <see cref="Alignment"/>, then
/// every tensor's bytes, each starting at a multiple of <see cref="Alignment"/> from the data start.
/// All integers little-endian. The file is written to a temporary sibling and renamed into place.
/// </summary>
public sealed class GgufWriter
{
    public const uint Version = 3;
    /// <summary>GGUF's default alignment (also written as <c>general.alignment</c>).</summary>
    public const int DefaultAlignment = 32;

    private readonly List<(string Key, GgufValueType Type, object Value)> _kv = new();
    private readonly List<Tensor> _tensors = new();
    private readonly HashSet<string> _keys = new(StringComparer.Ordinal), _names = new(StringComparer.Ordinal);

    public GgufWriter(int alignment = DefaultAlignment)
    {
        if (alignment <= 0 || (alignment & (alignment - 1)) != 0) throw new ArgumentException("alignment must be a power of two", nameof(alignment));
        Alignment = alignment;
        AddUInt32("general.alignment", (uint)alignment);
    }

    public int Alignment { get; }

    private sealed record Tensor(string Name, long[] Shape, GgmlType Type, long Bytes, Func<byte[]> Data);

    public void AddString(string key, string value) => Add(key, GgufValueType.String, value);
    public void AddUInt32(string key, uint value) => Add(key, GgufValueType.UInt32, value);
    public void AddInt32(string key, int value) => Add(key, GgufValueType.Int32, value);
    public void AddFloat32(string key, float value) => Add(key, GgufValueType.Float32, value);
    public void AddBool(string key, bool value) => Add(key, GgufValueType.Bool, value);
    public void AddStrings(string key, IReadOnlyList<string> values) => Add(key, GgufValueType.Array, (GgufValueType.String, (object)values));
    public void AddFloat32s(string key, IReadOnlyList<float> values) => Add(key, GgufValueType.Array, (GgufValueType.Float32, (object)values));
    public void AddInt32s(string key, IReadOnlyList<int> values) => Add(key, GgufValueType.Array, (GgufValueType.Int32, (object)values));

    private void Add(string key, GgufValueType type, object value)
    {
        if (!_keys.Add(key)) throw new ArgumentException($"GGUF key '{key}' written twice");
        _kv.Add((key, type, value));
    }

    /// <summary>
    /// Adds a tensor of PyTorch <paramref name="shape"/> (outermost first); <paramref name="data"/> returns its
    /// little-endian bytes in row-major order when the file is written (so the weights are converted one at a time).
    /// </summary>
    public void AddTensor(string name, long[] shape, GgmlType type, Func<byte[]> data)
    {
        if (!_names.Add(name)) throw new ArgumentException($"GGUF tensor '{name}' added twice");
        if (Encoding.UTF8.GetByteCount(name) >= 64) throw new ArgumentException($"GGUF tensor name '{name}' is longer than ggml's 63 bytes");
        long n = 1;
        foreach (long d in shape) n = checked(n * d);
        _tensors.Add(new Tensor(name, (long[])shape.Clone(), type, checked(n * ElementSize(type)), data));
    }

    public static int ElementSize(GgmlType t) => t == GgmlType.F32 ? 4 : 2;

    /// <summary>Writes the file (temporary sibling, then rename: no half-written file on failure).</summary>
    public void Write(string path)
    {
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        string tmp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.tmp-{Guid.NewGuid().ToString("N")[..12]}");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
                WriteTo(fs);
            File.Move(tmp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    public void WriteTo(Stream stream)
    {
        using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);   // BinaryWriter is little-endian
        w.Write("GGUF"u8);
        w.Write(Version);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)_kv.Count);
        foreach (var (key, type, value) in _kv)
        {
            WriteString(w, key);
            w.Write((uint)type);
            WriteValue(w, type, value);
        }
        long offset = 0;
        var offsets = new long[_tensors.Count];
        for (int i = 0; i < _tensors.Count; i++)
        {
            var t = _tensors[i];
            WriteString(w, t.Name);
            w.Write((uint)t.Shape.Length);
            for (int d = t.Shape.Length - 1; d >= 0; d--) w.Write((ulong)t.Shape[d]);   // ggml: ne[0] is the innermost dim
            w.Write((uint)t.Type);
            w.Write((ulong)offset);
            offsets[i] = offset;
            offset = Align(offset + t.Bytes);
        }
        Pad(w);
        long dataStart = w.BaseStream.Position;
        for (int i = 0; i < _tensors.Count; i++)
        {
            var t = _tensors[i];
            byte[] bytes = t.Data();
            if (bytes.Length != t.Bytes)
                throw new InvalidOperationException($"GGUF tensor '{t.Name}': {bytes.Length} bytes given, shape and type need {t.Bytes}");
            if (w.BaseStream.Position - dataStart != offsets[i]) throw new InvalidOperationException("GGUF writer: tensor offset out of step");
            w.Write(bytes);
            Pad(w);
        }
    }

    private long Align(long x) => (x + Alignment - 1) / Alignment * Alignment;

    private void Pad(BinaryWriter w)
    {
        long pos = w.BaseStream.Position;
        for (long p = pos; p < Align(pos); p++) w.Write((byte)0);
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        byte[] b = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)b.Length);
        w.Write(b);
    }

    private static void WriteValue(BinaryWriter w, GgufValueType type, object value)
    {
        switch (type)
        {
            case GgufValueType.String: WriteString(w, (string)value); break;
            case GgufValueType.UInt32: w.Write((uint)value); break;
            case GgufValueType.Int32: w.Write((int)value); break;
            case GgufValueType.Float32: w.Write((float)value); break;
            case GgufValueType.Bool: w.Write((byte)((bool)value ? 1 : 0)); break;
            case GgufValueType.Array:
            {
                var (elem, items) = ((GgufValueType, object))value;
                w.Write((uint)elem);
                switch (items)
                {
                    case IReadOnlyList<string> s: w.Write((ulong)s.Count); foreach (var x in s) WriteString(w, x); break;
                    case IReadOnlyList<float> f: w.Write((ulong)f.Count); foreach (var x in f) w.Write(x); break;
                    case IReadOnlyList<int> n: w.Write((ulong)n.Count); foreach (var x in n) w.Write(x); break;
                    default: throw new InvalidOperationException("unsupported GGUF array");
                }
                break;
            }
            default: throw new InvalidOperationException($"unsupported GGUF value type {type}");
        }
    }
}
