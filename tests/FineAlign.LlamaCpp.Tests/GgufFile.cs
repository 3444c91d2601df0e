using System.Text;

namespace FineAlign.LlamaCpp.Tests;

/// <summary>
/// An independent GGUF v3 reader for the tests (written from the format description, not from the writer): header,
/// metadata with their types, tensor infos and the absolute file offset of each tensor's data.
/// </summary>
public sealed class GgufFile
{
    public uint Version { get; private set; }
    public Dictionary<string, (uint Type, object Value)> Metadata { get; } = new(StringComparer.Ordinal);
    public List<(string Name, ulong[] Dims, uint Type, ulong Offset)> Tensors { get; } = new();
    public long DataStart { get; private set; }
    public long Length { get; private set; }

    public static GgufFile Read(string path)
    {
        var f = new GgufFile();
        using var s = File.OpenRead(path);
        using var r = new BinaryReader(s, Encoding.UTF8);
        f.Length = s.Length;
        if (Encoding.ASCII.GetString(r.ReadBytes(4)) != "GGUF") throw new InvalidDataException("bad magic");
        f.Version = r.ReadUInt32();
        ulong nTensors = r.ReadUInt64(), nKv = r.ReadUInt64();
        for (ulong i = 0; i < nKv; i++)
        {
            string key = Str(r);
            uint type = r.ReadUInt32();
            f.Metadata[key] = (type, Value(r, type));
        }
        for (ulong i = 0; i < nTensors; i++)
        {
            string name = Str(r);
            uint nd = r.ReadUInt32();
            var dims = new ulong[nd];
            for (int d = 0; d < nd; d++) dims[d] = r.ReadUInt64();
            f.Tensors.Add((name, dims, r.ReadUInt32(), r.ReadUInt64()));
        }
        uint align = f.Metadata.TryGetValue("general.alignment", out var a) ? (uint)a.Value : 32;
        f.DataStart = (s.Position + align - 1) / align * align;
        return f;
    }

    public T Get<T>(string key) => (T)Metadata[key].Value;

    public (string Name, ulong[] Dims, uint Type, ulong Offset) Tensor(string name) => Tensors.Single(t => t.Name == name);

    private static string Str(BinaryReader r) => Encoding.UTF8.GetString(r.ReadBytes(checked((int)r.ReadUInt64())));

    private static object Value(BinaryReader r, uint type) => type switch
    {
        0 => r.ReadByte(), 1 => r.ReadSByte(), 2 => r.ReadUInt16(), 3 => r.ReadInt16(), 4 => r.ReadUInt32(), 5 => r.ReadInt32(),
        6 => r.ReadSingle(), 7 => r.ReadByte() switch { 0 => false, 1 => true, var b => throw new InvalidDataException($"bool byte {b}") },
        8 => Str(r), 10 => r.ReadUInt64(), 11 => r.ReadInt64(), 12 => r.ReadDouble(),
        9 => Array(r),
        _ => throw new InvalidDataException($"unknown GGUF value type {type}"),
    };

    private static object Array(BinaryReader r)
    {
        uint elem = r.ReadUInt32();
        ulong n = r.ReadUInt64();
        var items = new List<object>((int)n);
        for (ulong i = 0; i < n; i++) items.Add(Value(r, elem));
        return (elem, items);
    }

    /// <summary>The element type and items of an array value.</summary>
    public (uint Elem, List<object> Items) Array(string key) => ((uint, List<object>))Metadata[key].Value;
}
